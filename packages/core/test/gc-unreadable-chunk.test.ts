/**
 * A pack GC would repack that holds a referenced chunk with no copy that reads well (damaged, stored
 * once): GC leaves that pack whole (its bytes kept for forensics; verify still reports the backups
 * it breaks), frees everything else it can, and counts the chunk and the pack (garbage-collector.ts,
 * gc-repack.ts). Over the memory store and over the real posix store.
 */
import { describe, expect, it } from 'vitest';
import type { ObjectStore } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { MiB, keys } from './helpers.js';
import { damageCopy, writePack } from './pack-copies.js';
import { memoryAndPosixStores } from './store-kinds.js';

const stores = memoryAndPosixStores('gc-unreadable');

/** A chunked service over `store` whose 4 MiB packs hold every chunk of one backup below. */
const open = (store: ObjectStore) => openRepo(store, 4 * MiB);

/**
 * Backup `full` of 4 chunks in one pack (returned in blob order, with the pack), backup `broken`
 * of the first three, backup `good` of the second and third, and backup `dead` of two other
 * chunks in a pack of their own; `full` and `dead` are then deleted, so that GC repacks the first
 * pack (a quarter of it is dead) and deletes the second. The first chunk is then damaged: it is
 * stored once, so `broken` is broken and no GC can copy it forward.
 */
async function scene(store: ObjectStore, seed: number) {
  const service = await open(store);
  const repo = service.repository;
  const data = pattern(4 * CHUNK, seed);
  const full = await backUp(service, 'full', data);
  const chunks = Array.from({ length: 4 }, (_, k) => data.subarray(k * CHUNK, (k + 1) * CHUNK));
  const at = (c: Buffer) => repo.index.get(repo.codec.chunkId(c))!;
  chunks.sort((x, y) => at(x).offset - at(y).offset);
  const pack = at(chunks[0]!).pack;
  expect(chunks.every((c) => at(c).pack === pack)).toBe(true);
  const broken = await backUp(service, 'broken', Buffer.concat(chunks.slice(0, 3)));
  const goodData = Buffer.concat(chunks.slice(1, 3));
  const good = await backUp(service, 'good', goodData);
  const dead = await backUp(service, 'dead', pattern(2 * CHUNK, seed + 1));
  const deadPack = repo.index.get(repo.codec.chunkId(pattern(2 * CHUNK, seed + 1).subarray(0, CHUNK)))!.pack;
  expect(deadPack).not.toBe(pack);
  await service.delete(full);
  await service.delete(dead);
  const unreadable = repo.codec.chunkId(chunks[0]!);
  await damageCopy(repo, unreadable);
  return { service, repo, chunks, pack, deadPack, broken, good, goodData, unreadable };
}

describe.each(stores)('gc over a pack holding a damaged chunk stored once (%s)', (_, makeStore) => {
  it('gc() leaves that pack byte-identical, deletes the dead pack, counts the chunk and the pack; verify still names the broken backup; the other backup restores byte-exact', async () => {
    const store = await makeStore();
    const { service, pack, deadPack, broken, good, goodData, unreadable } = await scene(store, 401);
    const before = await store.get(`packs/${pack}`);

    const report = await service.gc({ graceMs: 0 });
    expect(report).toMatchObject({ chunksUnreadable: 1, packsLeftUnreadable: 1, packsRepacked: 0, packsDeleted: 1, copiesDamaged: 0 });
    expect(report.bytesFreed).toBeGreaterThan(0);
    const packs = await keys(store, 'packs/');
    expect(packs).toEqual([`packs/${pack}`]);
    expect((await store.get(`packs/${pack}`)).equals(before)).toBe(true);
    expect(packs).not.toContain(`packs/${deadPack}`);
    await service.close();

    const other = await open(store);
    const whole = await other.verify();
    expect(whole.problems).toEqual([expect.objectContaining({ backupId: broken.id, code: 'CORRUPT', message: expect.stringContaining(unreadable) })]);
    expect((await restored(other, good)).equals(goodData)).toBe(true);
    // A later GC leaves it again, and frees nothing more.
    expect(await other.gc({ graceMs: 0 })).toMatchObject({ chunksUnreadable: 1, packsLeftUnreadable: 1, packsRepacked: 0, packsDeleted: 0 });
    expect(await keys(store, 'packs/')).toEqual([`packs/${pack}`]);
    await other.close();
  });

  it('gc({ dryRun }) reports the counts of the run that follows and changes nothing', async () => {
    const store = await makeStore();
    const { service } = await scene(store, 402);
    const packs = await keys(store, 'packs/');
    const indexes = await keys(store, 'index/');

    const dry = await service.gc({ graceMs: 0, dryRun: true });
    expect(await keys(store, 'packs/')).toEqual(packs);
    expect(await keys(store, 'index/')).toEqual(indexes);
    const real = await service.gc({ graceMs: 0 });
    await service.close();
    const counts = (r: typeof real) => ({ chunksUnreadable: r.chunksUnreadable, packsLeftUnreadable: r.packsLeftUnreadable, packsRepacked: r.packsRepacked, packsDeleted: r.packsDeleted, chunksRemoved: r.chunksRemoved });
    expect(counts(dry)).toEqual({ chunksUnreadable: 1, packsLeftUnreadable: 1, packsRepacked: 0, packsDeleted: 1, chunksRemoved: 2 });
    expect(counts(real)).toEqual(counts(dry));
  });

  it('gc() copies forward a chunk of the left pack whose copy there is damaged too, from its only good copy, before deleting the pack holding that copy: the other backup restores byte-exact', async () => {
    const store = await makeStore();
    const { service, repo, chunks, pack, good, goodData } = await scene(store, 403);
    // A second copy of the second chunk, in a pack with a chunk no backup references (GC deletes
    // it whole: the index resolves the chunk to the first pack, which GC was to repack).
    const id = repo.codec.chunkId(chunks[1]!);
    await writePack(repo, [chunks[1]!, pattern(CHUNK, 499)]);
    const second = repo.index.otherCopies(id)[0]!.pack;
    expect(repo.index.get(id)!.pack).toBe(pack);
    await damageCopy(repo, id, pack);

    const report = await service.gc({ graceMs: 0 });
    expect(report).toMatchObject({ chunksUnreadable: 1, packsLeftUnreadable: 1, packsRepacked: 0 });
    expect(await keys(store, 'packs/')).not.toContain(`packs/${second}`);
    expect(await keys(store, 'packs/')).toContain(`packs/${pack}`);
    await service.close();

    const other = await open(store);
    expect((await other.verify(good)).problems).toEqual([]);
    expect((await restored(other, good)).equals(goodData)).toBe(true);
    await other.close();
  });
});
