import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryObjectStore, MemoryVolumeDriver, RepositoryCatalog, type ByteRange } from '../src/index.js';
import { cutRange, fetchChunks } from '../src/repository/chunk-fetcher.js';
import { MiB, filledVolume } from './helpers.js';
import { tick } from './settle.js';

/** A memory store whose ranged gets take a few ms and are counted while in flight. */
class SlowStore extends MemoryObjectStore {
  active = 0;
  started = 0;
  override async get(key: string, range?: ByteRange): Promise<Buffer> {
    this.active++;
    this.started++;
    try {
      await tick(2);
      return await super.get(key, range);
    } finally {
      this.active--;
    }
  }
}

/** An unencrypted repository (chunk id = SHA-256 of the plaintext) holding one 8 MiB backup. */
async function rig() {
  const store = new SlowStore('mem');
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: 2 * MiB } });
  const volumes = new MemoryVolumeDriver();
  const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
  const v = await filledVolume(volumes, 8 * MiB);
  const b = await manager.backup({ volumeId: v.id });
  const repo = service.repository;
  const ids: string[] = [];
  for await (const id of (await repo.readManifest(b.id)).chunks.chunkIds()) ids.push(id);
  store.started = 0;
  return { store, repo, ids };
}

describe('fetchChunks', () => {
  it('hands over every chunk once, checked; reads go on while earlier ranges are handled, and handlers in flight never exceed the plaintext buffers', async () => {
    const { store, repo, ids } = await rig();
    expect(ids.length).toBe(32);
    const seen = new Map<string, number>();
    let handling = 0;
    let maxHandling = 0;
    let readsDuringHandling = 0;
    await fetchChunks(
      repo,
      [...ids, ...ids], // asked twice, fetched once
      async (chunks) => {
        handling++;
        maxHandling = Math.max(maxHandling, handling);
        const before = store.started;
        for (const { id, data } of chunks) {
          expect(createHash('sha256').update(data).digest('hex')).toBe(id);
          seen.set(id, (seen.get(id) ?? 0) + 1);
        }
        await tick(6);
        readsDuringHandling += store.started - before;
        handling--;
      },
      { concurrency: 1, decodeBuffers: 3, maxRange: 512 * 1024 },
    );
    expect([...seen.keys()].sort()).toEqual([...new Set(ids)].sort());
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    expect(maxHandling).toBeGreaterThanOrEqual(2);
    expect(maxHandling).toBeLessThanOrEqual(3);
    expect(readsDuringHandling).toBeGreaterThan(0);
  });

  it('a failing handler: no range starts after it, the call settles after the ranges in flight, with that error', async () => {
    const { store, repo, ids } = await rig();
    let calls = 0;
    let startedAtFailure = -1;
    let handling = 0;
    const boom = new Error('target exploded');
    const p = fetchChunks(
      repo,
      ids,
      async () => {
        handling++;
        try {
          await tick(3);
          if (++calls === 2) {
            startedAtFailure = store.started;
            throw boom;
          }
        } finally {
          handling--;
        }
      },
      { concurrency: 3, decodeBuffers: 2, maxRange: 256 * 1024 },
    );
    await expect(p).rejects.toBe(boom);
    expect(store.started).toBe(startedAtFailure);
    expect(store.started).toBeLessThan(32);
    expect(store.active).toBe(0);
    expect(handling).toBe(0);
  });

  it('a cancel stops the walk with CANCELLED at once; no range is read or handed over after it', async () => {
    const { store, repo, ids } = await rig();
    const controller = new AbortController();
    let handled = 0;
    let startedAtAbort = 0;
    const p = fetchChunks(
      repo,
      ids,
      async () => {
        if (++handled === 3) {
          controller.abort();
          startedAtAbort = store.started;
        }
        await tick(1);
      },
      { concurrency: 2, maxRange: 256 * 1024, signal: controller.signal },
    );
    await expect(p).rejects.toMatchObject({ code: 'CANCELLED' });
    await tick(20); // the gets in flight at the abort settle, and are dropped
    expect(store.active).toBe(0);
    expect(store.started).toBe(startedAtAbort);
    expect(handled).toBe(3);
  });
});

describe('cutRange', () => {
  // Blobs at 0 (100 bytes), 100 (50), a gap, 200 (100): one range of 300 bytes.
  const blob = (id: string, offset: number, length: number) => ({ id, pack: 'p', offset, length, rawLength: length * 2 });
  const range = { pack: 'p', offset: 0, length: 300, raw: 500, blobs: [blob('a', 0, 100), blob('b', 100, 50), blob('c', 200, 100)] };

  it('keeps the blobs that end by the pack size, in one range ending at the last of them, and loses the rest', () => {
    expect(cutRange(range, 150)).toEqual({ kept: { pack: 'p', offset: 0, length: 150, raw: 300, blobs: range.blobs.slice(0, 2) }, lost: range.blobs.slice(2) });
    expect(cutRange(range, 299)).toEqual({ kept: { pack: 'p', offset: 0, length: 150, raw: 300, blobs: range.blobs.slice(0, 2) }, lost: range.blobs.slice(2) });
    expect(cutRange(range, 149)).toEqual({ kept: { pack: 'p', offset: 0, length: 100, raw: 200, blobs: range.blobs.slice(0, 1) }, lost: range.blobs.slice(1) });
  });

  it('is undefined when no blob is whole, or every one is', () => {
    expect(cutRange(range, 99)).toBeUndefined();
    expect(cutRange(range, 300)).toBeUndefined();
    expect(cutRange(range, 1000)).toBeUndefined();
  });
});
