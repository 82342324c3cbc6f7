/**
 * A pack cut short (truncated in the middle) loses only the chunks whose blobs it cuts or lacks:
 * restore, verify and GC's repack read the chunks wholly before the cut as usual, although the
 * fetcher reads neighbouring blobs in one ranged get that now reaches past the pack's end
 * (chunk-fetcher.ts). Over the memory store and over the real posix store.
 */
import { describe, expect, it } from 'vitest';
import { CairnError, ChunkedBackupService, MemoryObjectStore, type ObjectInfo, type ObjectStore } from '../src/index.js';
import { fetchChunks } from '../src/repository/chunk-fetcher.js';
import type { Repository } from '../src/repository/repository.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { MiB } from './helpers.js';
import { writePack } from './pack-copies.js';
import { memoryAndPosixStores } from './store-kinds.js';

const stores = memoryAndPosixStores('truncated-pack');

/** A chunked service over `store` whose 4 MiB packs hold every chunk of the backups below. */
const open = (store: ObjectStore) => openRepo(store, 4 * MiB);

/**
 * Backs up `n` chunks as backup `full` (all in one pack), and returns them in the order of their
 * blobs in that pack, with the pack's id.
 */
async function onePack(service: ChunkedBackupService, n: number, seed: number) {
  const repo = service.repository;
  const data = pattern(n * CHUNK, seed);
  const full = await backUp(service, 'full', data);
  const chunks = Array.from({ length: n }, (_, k) => data.subarray(k * CHUNK, (k + 1) * CHUNK));
  const at = (c: Buffer) => repo.index.get(repo.codec.chunkId(c))!;
  chunks.sort((x, y) => at(x).offset - at(y).offset);
  const pack = at(chunks[0]!).pack;
  expect(chunks.every((c) => at(c).pack === pack)).toBe(true);
  return { repo, full, data, chunks, pack, at };
}

/** Cuts pack `pack` to its first `size` bytes, through the store. */
async function truncate(store: ObjectStore, pack: string, size: number): Promise<void> {
  const bytes = await store.get(`packs/${pack}`);
  await store.put(`packs/${pack}`, bytes.subarray(0, size));
}

/** Stores a second copy of each of `copies` in a pack of its own, named by an index object. */
async function secondCopies(repo: Repository, copies: Buffer[]): Promise<void> {
  await writePack(repo, copies);
  for (const c of copies) expect(repo.index.otherCopies(repo.codec.chunkId(c))).toHaveLength(1);
}

describe.each(stores)('a pack truncated in the middle (%s)', (_, makeStore) => {
  it('verify() names exactly the backups with a chunk at or past the cut; the backup wholly before it restores byte-exact and verifies clean', async () => {
    const store = await makeStore();
    const service = await open(store);
    const { full, chunks, pack, at } = await onePack(service, 6, 301);
    // Two more backups of chunks in full's pack: the first three blobs, and the last two.
    const headData = Buffer.concat(chunks.slice(0, 3));
    const head = await backUp(service, 'head', headData);
    const tail = await backUp(service, 'tail', Buffer.concat(chunks.slice(4)));
    const cut = at(chunks[3]!);
    await truncate(store, pack, cut.offset + Math.floor(cut.length / 2)); // in the middle of the fourth blob

    const report = await service.verify();
    expect(report.checked).toEqual(expect.arrayContaining(['full', 'head', 'tail']));
    const problems = [...report.problems].sort((a, b) => (a.backupId ?? '').localeCompare(b.backupId ?? ''));
    expect(problems).toEqual([
      { backupId: 'full', code: 'CORRUPT', message: expect.stringContaining(`pack ${pack} is truncated`), details: { badChunk: { chunkId: expect.any(String), pack, count: 3 } } },
      { backupId: 'tail', code: 'CORRUPT', message: expect.stringContaining(`pack ${pack} is truncated`), details: { badChunk: { chunkId: expect.any(String), pack, count: 2 } } },
    ]);
    // Only the three chunks the cut takes are named (full's problem names each of its bad chunks).
    for (const c of chunks) {
      const named = problems[0]!.message.includes(service.repository.codec.chunkId(c));
      expect(named).toBe(chunks.indexOf(c) >= 3);
    }
    expect((await service.verify(head)).problems).toEqual([]);
    expect((await restored(service, head)).equals(headData)).toBe(true);
    await expect(restored(service, full)).rejects.toMatchObject({ code: 'CORRUPT', details: { backupId: 'full' } });
    await expect(restored(service, tail)).rejects.toMatchObject({ code: 'CORRUPT', details: { backupId: 'tail' } });
    await service.close();
  });

  it('restore(backup) takes the chunks before the cut from the truncated pack and those past it from their other copies, byte-exact; verify(backup) is clean', async () => {
    const store = await makeStore();
    const service = await open(store);
    const { repo, full, data, chunks, pack, at } = await onePack(service, 5, 302);
    await secondCopies(repo, chunks.slice(2)); // the chunks before the cut are stored once
    const cut = at(chunks[2]!);
    await truncate(store, pack, cut.offset + 1);

    expect((await restored(service, full)).equals(data)).toBe(true);
    expect((await service.verify(full)).problems).toEqual([]);
    // A verify of the whole repository names the three copies the cut took, none before it.
    const whole = await service.verify();
    expect(whole.problems).toHaveLength(3);
    for (const [k, c] of chunks.entries()) {
      expect(whole.problems.some((p) => p.message.includes(repo.codec.chunkId(c)))).toBe(k >= 2);
    }
    await service.close();
  });

  it('gc() repacking the truncated pack keeps the chunks before the cut and the other copy of the one it cuts: verify clean, restore byte-exact', async () => {
    const store = await makeStore();
    const service = await open(store);
    const { repo, full, chunks, pack, at } = await onePack(service, 4, 303);
    const keptData = Buffer.concat(chunks.slice(0, 3));
    const kept = await backUp(service, 'kept', keptData);
    await service.delete(full); // the pack's last blob is dead now
    await secondCopies(repo, [chunks[2]!]);
    const cut = at(chunks[2]!);
    await truncate(store, pack, cut.offset + Math.floor(cut.length / 2));

    const report = await service.gc({ graceMs: 0, repackThreshold: 0.2 });
    expect(report).toMatchObject({ packsRepacked: 1, chunksUnreadable: 0 });
    await service.close();
    const other = await open(store);
    expect((await other.verify()).problems).toEqual([]);
    expect((await restored(other, kept)).equals(keptData)).toBe(true);
    await other.close();
  });
});

/** A memory store whose heads of packs fail UNAVAILABLE once `down`. */
class NoHeadStore extends MemoryObjectStore {
  down = false;
  override async head(key: string): Promise<ObjectInfo> {
    if (this.down && key.startsWith('packs/')) throw new CairnError('UNAVAILABLE', `head ${key}: connection reset`);
    return super.head(key);
  }
}

describe('a truncated pack over a store that fails', () => {
  it('a ranged get past the end whose head then fails UNAVAILABLE fails the whole fetch UNAVAILABLE, reporting no chunk as damaged', async () => {
    const store = new NoHeadStore('mem');
    const service = await open(store);
    const { repo, chunks, pack, at } = await onePack(service, 3, 304);
    await truncate(store, pack, at(chunks[2]!).offset + 1);
    store.down = true;
    const errors: string[] = [];
    const fetch = fetchChunks(repo, chunks.map((c) => repo.codec.chunkId(c)), async () => undefined, { onError: (id) => errors.push(id) });
    await expect(fetch).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(errors).toEqual([]);
    await service.close();
  });
});
