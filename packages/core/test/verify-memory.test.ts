/**
 * Verify's memory per distinct chunk. Fetching is replaced by a stand-in that reads nothing (it
 * hands back views of one buffer), so what is measured is what verify itself holds while the
 * chunks are checked: the repository, index and manifest here are real, its packs are not.
 */
import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it, vi } from 'vitest';
import { MemoryObjectStore, Repository } from '../src/index.js';
import { encodeDocument } from '../src/repository/codec.js';
import { writeIndexObject } from '../src/repository/pack-writer.js';
import { verifyBackups } from '../src/repository/verifier.js';
import type { IndexEntry } from '../src/repository/format.js';
import { FAST_KDF } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/**
 * Heap and array buffers in use once collected: array buffers are freed by a background sweeper,
 * which a busy machine delays, so this waits until the figure stops falling.
 */
async function retained(): Promise<number> {
  let last = Infinity;
  for (let i = 0; i < 100; i++) {
    gc();
    const m = process.memoryUsage();
    const now = m.heapUsed + m.arrayBuffers;
    if (now >= last) return last;
    last = now;
    await new Promise((r) => setTimeout(r, 20));
  }
  return last;
}

/** Retained memory (heap and array buffers) when the first fetch starts (each starts alike), and the largest fetch. */
const seen = { peak: 0, largestFetch: 0 };
vi.mock('../src/repository/chunk-fetcher.js', () => ({
  fetchChunks: async (repo: Repository, ids: Iterable<string>, onChunks: (c: { id: string; data: Buffer }[]) => Promise<void>) => {
    if (seen.peak === 0) seen.peak = await retained();
    const data = Buffer.alloc(repo.config.chunkSize);
    let n = 0;
    for (const id of ids) {
      n++;
      await onChunks([{ id, data }]);
    }
    seen.largestFetch = Math.max(seen.largestFetch, n);
  },
}));

const CHUNKS = 200_000;
const hexId = (i: number | string): string => createHash('sha256').update(String(i)).digest('hex');

/** A repository with one backup over CHUNKS distinct chunks: ten packs of 20,000 blobs named by one index object (the packs are not stored). */
async function repositoryOfManyChunks(): Promise<Repository> {
  const store = new MemoryObjectStore('mem');
  await Repository.init(store, { chunkSize: 65536, kdf: FAST_KDF });
  const repo = await Repository.open(store, { workers: 0 });
  const chunkSize = repo.config.chunkSize;
  const packs: [string, IndexEntry[]][] = [];
  for (let p = 0; p < 10; p++) {
    const entries = Array.from({ length: CHUNKS / 10 }, (_, j): IndexEntry => ({ id: hexId(p * (CHUNKS / 10) + j), offset: j * 64, length: 40, rawLength: chunkSize }));
    packs.push([hexId(`pack ${p}`), entries]);
  }
  await writeIndexObject(store, repo.codec, repo.index, packs);
  const chunks = Array.from({ length: CHUNKS }, (_, i) => hexId(i));
  const record = { id: 'b', volumeId: 'v', createdAt: new Date().toISOString() };
  const manifest = { version: 3, backupId: 'b', volumeId: 'v', volumeName: 'v', size: CHUNKS * chunkSize, chunkSize, createdAt: record.createdAt, volumeMetadata: {}, stats: {}, record, chunks };
  await store.put('manifests/b', encodeDocument(repo.codec, manifest, 'manifest:b', 'chunks'));
  await repo.index.refresh();
  return repo;
}

describe('verify', () => {
  it('holds under 100 bytes per distinct chunk while it checks them (it held ~175, and a fetch plan of every chunk besides), fetching a bounded batch at a time', async () => {
    const repo = await repositoryOfManyChunks();
    const before = await retained();
    let progressed = 0;
    const report = await verifyBackups(repo, undefined, { progress: (done) => (progressed = done) });
    expect(report.problems).toEqual([]);
    expect(progressed).toBe(CHUNKS * repo.config.chunkSize);
    const perChunk = (seen.peak - before) / CHUNKS;
    expect(perChunk, `${Math.round(perChunk)} bytes a chunk (retained ${before} before, ${seen.peak} at the peak)`).toBeLessThan(100);
    expect(seen.largestFetch).toBeLessThanOrEqual(16_384);
    await repo.close();
  });
});
