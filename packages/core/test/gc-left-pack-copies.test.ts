/**
 * A pack GC planned to repack that it leaves whole before reading it (it holds a copy of a chunk
 * with no good copy, found while another pack was read): the chunks the index resolves to it are
 * still proven before GC drops their other copies, and one whose copy there is damaged is copied
 * forward from the good copy GC removes (gc-repack.ts), whether A is read in the same group of
 * packs as the pack that leaves it or after it. Over the memory store and the real posix store.
 */
import { describe, expect, it } from 'vitest';
import type { ObjectStore } from '../src/index.js';
import { collectGarbage } from '../src/repository/garbage-collector.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { MiB, keys } from './helpers.js';
import { damageCopy, writePack } from './pack-copies.js';
import { memoryAndPosixStores } from './store-kinds.js';

const stores = memoryAndPosixStores('gc-left-pack');

const open = (store: ObjectStore) => openRepo(store, 4 * MiB);

/**
 * Pack P (first known) holds chunk Z, live, and a dead chunk; pack A (next) another copy of Z, chunk
 * X, live (the index resolves X to A), and a dead chunk; pack B (last) another copy of X and a dead
 * chunk. Both copies of Z are damaged (Z has no good copy), and so is X's copy in A: X's only good
 * copy is in B, which GC deletes whole (every live chunk of it resolves elsewhere). GC repacks P
 * first, finds Z unreadable and leaves P and A whole.
 */
async function scene(store: ObjectStore, seed: number) {
  const service = await open(store);
  const repo = service.repository;
  const [z, x, g1, g2, g3] = [0, 1, 2, 3, 4].map((k) => pattern(CHUNK, seed * 10 + k));
  const first = await backUp(service, 'first', Buffer.concat([z!, g1!]));
  const zId = repo.codec.chunkId(z!);
  const xId = repo.codec.chunkId(x!);
  const p = repo.index.get(zId)!.pack;
  const a = await writePack(repo, [z!, x!, g2!]);
  const b = await writePack(repo, [x!, g3!]);
  expect(new Set([p, a, b]).size).toBe(3);
  expect(repo.index.get(xId)!.pack).toBe(a);
  const both = await backUp(service, 'both', Buffer.concat([z!, x!]));
  const xOnly = await backUp(service, 'x', x!);
  await service.delete(first);
  await damageCopy(repo, zId, p);
  await damageCopy(repo, zId, a);
  await damageCopy(repo, xId, a);
  return { service, x: x!, xId, zId, p, a, b, both, xOnly };
}

describe.each(stores)('gc leaving a pack whole before reading it (%s)', (_, makeStore) => {
  it('copies forward a chunk of that pack whose copy there is damaged before deleting the pack holding its only good copy: its backup restores byte-exact', async () => {
    const store = await makeStore();
    const { service, x, xId, p, a, b, both, xOnly, zId } = await scene(store, 61);

    const report = await service.gc({ graceMs: 0 });
    expect(report).toMatchObject({ chunksUnreadable: 1, packsLeftUnreadable: 2, packsRepacked: 0, packsDeleted: 1 });
    const packs = await keys(store, 'packs/');
    expect(packs).toEqual(expect.arrayContaining([`packs/${p}`, `packs/${a}`]));
    expect(packs).not.toContain(`packs/${b}`); // still freed: X went forward first
    await service.close();

    const other = await open(store);
    expect((await other.verify(xOnly)).problems).toEqual([]);
    expect((await restored(other, xOnly)).equals(x)).toBe(true);
    // Only the backup using Z is broken; X's damaged copy in A is named too when the reopened index
    // resolves X to it first (index objects load in listing order), as breaking no backup.
    const whole = await other.verify();
    expect(whole.problems.filter((q) => q.backupId !== undefined)).toEqual([expect.objectContaining({ backupId: both.id, message: expect.stringContaining(zId) })]);
    for (const q of whole.problems.filter((q) => q.backupId === undefined)) expect(q.details?.damagedCopy).toEqual({ chunkId: xId, packs: [a] });
    await other.close();
  });

  it('does the same when the repack reads each pack in a group of its own (a fetch batch of one chunk): A is left before its group is read', async () => {
    const store = await makeStore();
    const { service, x, a, b, p, xOnly } = await scene(store, 63);

    const report = await collectGarbage(service.repository, { graceMs: 0 }, 1);
    expect(report).toMatchObject({ chunksUnreadable: 1, packsLeftUnreadable: 2, packsRepacked: 0, packsDeleted: 1 });
    const packs = await keys(store, 'packs/');
    expect(packs).toEqual(expect.arrayContaining([`packs/${p}`, `packs/${a}`]));
    expect(packs).not.toContain(`packs/${b}`);
    await service.close();

    const other = await open(store);
    expect((await other.verify(xOnly)).problems).toEqual([]);
    expect((await restored(other, xOnly)).equals(x)).toBe(true);
    await other.close();
  });

  it('gc({ dryRun }) reports the counts of the run that follows', async () => {
    const store = await makeStore();
    const { service } = await scene(store, 62);
    const dry = await service.gc({ graceMs: 0, dryRun: true });
    const real = await service.gc({ graceMs: 0 });
    await service.close();
    const counts = (r: typeof real) => ({ chunksUnreadable: r.chunksUnreadable, packsLeftUnreadable: r.packsLeftUnreadable, packsRepacked: r.packsRepacked, packsDeleted: r.packsDeleted, copiesDamaged: r.copiesDamaged });
    expect(counts(real)).toEqual(counts(dry));
    expect(counts(dry)).toMatchObject({ chunksUnreadable: 1, packsLeftUnreadable: 2, packsRepacked: 0 });
  });
});
