/**
 * A chunk may be stored in more than one pack (two writers raced; docs/repository-format.md,
 * "Packs and indexes"), and any copy is valid. When the copy the index resolves to is damaged or
 * gone, readers (restore, verify, GC's repack) take the next copy the index names instead of
 * failing for as long as the first one stays there.
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ObjectStore } from '../src/index.js';
import { PackWriter } from '../src/repository/pack-writer.js';
import { ChunkCodec } from '../src/repository/codec.js';
import type { Repository } from '../src/repository/repository.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { readKeptCopies } from '../src/repository/dropped-copies.js';
import { collectGarbage } from '../src/repository/garbage-collector.js';
import { CountingStore, keys } from './helpers.js';

/**
 * Stores a second copy of `data` (chunk `id`) in a pack of its own, after it chunks `others` (each
 * stored once: say, a racing backup's chunks no backup references), named by an index object;
 * returns the pack's id.
 */
async function secondCopy(repo: Repository, data: Buffer, ...others: Buffer[]): Promise<string> {
  const id = repo.codec.chunkId(data);
  const writer = new PackWriter(repo.store, repo.codec, repo.index, repo.config.packSize, ChunkCodec.maxEncodedLength(CHUNK));
  for (const o of [data, ...others]) {
    const oid = repo.codec.chunkId(o);
    await writer.add(oid, repo.codec.encode(o, 'none', oid), o.length);
  }
  await writer.finish();
  const copy = repo.index.otherCopies(id).at(-1);
  if (!copy) throw new Error('the second copy is not in the index');
  return copy.pack;
}

/** Flips a byte in the middle of the blob the index resolves chunk `id` to; returns its pack's id. */
async function damageFirstCopy(store: ObjectStore, repo: Repository, id: string): Promise<string> {
  const l = repo.index.get(id)!;
  const pack = await store.get(`packs/${l.pack}`);
  pack[l.offset + Math.floor(l.length / 2)]! ^= 0x40;
  await store.put(`packs/${l.pack}`, pack);
  return l.pack;
}

describe('ChunkIndex.otherCopies', () => {
  it('otherCopies(id) lists the copies get(id) does not resolve to, and none once the first pack is removed', async () => {
    const service = await openRepo();
    const repo = service.repository;
    const data = pattern(2 * CHUNK, 101);
    await backUp(service, 'b', data);
    const [a, b] = [repo.codec.chunkId(data.subarray(0, CHUNK)), repo.codec.chunkId(data.subarray(CHUNK))];
    expect(repo.index.otherCopies(a)).toEqual([]); // no chunk is stored twice
    const first = repo.index.get(a)!.pack;
    const second = await secondCopy(repo, data.subarray(0, CHUNK));
    expect(repo.index.get(a)!.pack).toBe(first);
    expect(repo.index.otherCopies(a)).toMatchObject([{ id: a, pack: second, rawLength: CHUNK }]);
    expect(repo.index.otherCopies(b)).toEqual([]);
    repo.index.remove(first);
    expect(repo.index.get(a)!.pack).toBe(second);
    expect(repo.index.otherCopies(a)).toEqual([]);
    await service.close();
  });
});

describe('restore and verify of a chunk whose first copy is damaged or gone', () => {
  it('restore(backup) reads the other copy byte-exact; verify(backup) is clean; verify() names the damaged copy without a backupId', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const data = pattern(2 * CHUNK, 102);
    const b = await backUp(service, 'b', data);
    const id = repo.codec.chunkId(data.subarray(0, CHUNK));
    await secondCopy(repo, data.subarray(0, CHUNK));
    const damaged = await damageFirstCopy(store, repo, id);

    expect((await restored(service, b)).equals(data)).toBe(true);
    expect((await service.verify(b)).problems).toEqual([]);
    const whole = await service.verify();
    expect(whole.problems).toHaveLength(1);
    expect(whole.problems[0]).toMatchObject({ code: 'CORRUPT' });
    expect(whole.problems[0]!.backupId).toBeUndefined();
    expect(whole.problems[0]!.message).toContain(damaged);
    await service.close();
  });

  it('restore(backup) of a chunk whose first pack the store lost reads the other copy', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const data = pattern(CHUNK, 103); // one chunk: its pack holds nothing else
    const b = await backUp(service, 'b', data);
    const id = repo.codec.chunkId(data);
    await secondCopy(repo, data);
    await store.delete(`packs/${repo.index.get(id)!.pack}`); // the index still names it

    expect((await restored(service, b)).equals(data)).toBe(true);
    await service.close();
  });

  it('restore(backup) whose every copy of a chunk is damaged fails CORRUPT naming the backup', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const data = pattern(2 * CHUNK, 104);
    const b = await backUp(service, 'b', data);
    const id = repo.codec.chunkId(data.subarray(0, CHUNK));
    const second = await secondCopy(repo, data.subarray(0, CHUNK));
    await damageFirstCopy(store, repo, id);
    const l = repo.index.otherCopies(id).find((c) => c.pack === second)!;
    const pack = await store.get(`packs/${second}`);
    pack[l.offset + 10]! ^= 0x01;
    await store.put(`packs/${second}`, pack);

    await expect(restored(service, b)).rejects.toMatchObject({ code: 'CORRUPT', details: { backupId: 'b' } });
    const report = await service.verify(b);
    expect(report.problems).toMatchObject([{ backupId: 'b', code: 'CORRUPT' }]);
    await service.close();
  });
});

describe('gc over a chunk whose first copy is damaged', () => {
  it('gc() repacks from the other copy and drops the damaged pack: another process verifies clean and restores byte-exact', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const a = pattern(CHUNK, 105);
    const first = await backUp(service, 'first', Buffer.concat([a, pattern(CHUNK, 106)]));
    const data = Buffer.concat([a, pattern(CHUNK, 107)]);
    const b = await backUp(service, 'second', data); // reuses chunk a from the first backup's pack
    await service.delete(first); // that pack is half dead now: GC repacks it
    const id = repo.codec.chunkId(a);
    await secondCopy(repo, a);
    const damaged = await damageFirstCopy(store, repo, id);

    const report = await service.gc({ graceMs: 0 });
    expect(report.packsRepacked).toBe(1);
    expect(await keys(store, 'packs/')).not.toContain(`packs/${damaged}`);
    await service.close();

    const other = await openRepo(store);
    await other.repository.index.refresh();
    expect(other.repository.index.get(id)?.pack).not.toBe(damaged);
    expect(other.repository.index.indexedPacks().has(damaged)).toBe(false);
    expect((await other.verify()).problems).toEqual([]);
    expect((await restored(other, b)).equals(data)).toBe(true);
    await other.close();
  });
});

/**
 * GC deletes (or repacks) a pack holding a copy of a referenced chunk the index does not resolve
 * to: the copy it keeps must read well first, or the only good copy is lost.
 */
describe('gc dropping a copy of a chunk whose kept copy is damaged', () => {
  /** A backup 'b' of `n` chunks in one pack, and a second copy of its last-stored chunk in a pack otherwise dead. */
  async function twoCopies(seed: number, n = 2) {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const data = pattern(n * CHUNK, seed);
    const b = await backUp(service, 'b', data);
    const chunks = Array.from({ length: n }, (_, k) => data.subarray(k * CHUNK, (k + 1) * CHUNK));
    // The chunk stored last in the backup's pack (so that a truncation takes it and no other).
    const dup = chunks.sort((x, y) => repo.index.get(repo.codec.chunkId(y))!.offset - repo.index.get(repo.codec.chunkId(x))!.offset)[0]!;
    const id = repo.codec.chunkId(dup);
    const second = await secondCopy(repo, dup, pattern(CHUNK, seed + 1000)); // its other chunk is dead
    expect(repo.index.get(id)!.pack).not.toBe(second);
    return { store, service, repo, b, data, id, second };
  }

  /** Another process's view after GC: its verify of the whole repository and its restore of `b`. */
  async function afterwards(store: ObjectStore, b: Parameters<typeof restored>[1], data: Buffer): Promise<void> {
    const other = await openRepo(store);
    await other.repository.index.refresh();
    expect((await other.verify()).problems).toEqual([]);
    expect((await restored(other, b)).equals(data)).toBe(true);
    await other.close();
  }

  it('gc() whose kept copy has a flipped byte keeps the good copy of the otherwise dead pack: verify clean, restore byte-exact', async () => {
    const { store, service, repo, b, data, id, second } = await twoCopies(120);
    const damaged = await damageFirstCopy(store, repo, id);

    const report = await service.gc({ graceMs: 0 });
    await service.close();
    await afterwards(store, b, data);
    // The damaged pack was repacked (the chunk taken from the good copy), and the dead one deleted.
    expect(report).toMatchObject({ copiesDamaged: 1, chunksUnreadable: 0, packsRepacked: 1, packsDeleted: 1 });
    const packs = await keys(store, 'packs/');
    expect(packs).not.toContain(`packs/${damaged}`);
    expect(packs).not.toContain(`packs/${second}`);
  });

  it('gc() whose kept copy lies in a truncated pack keeps the good copy: verify clean, restore byte-exact', async () => {
    // One chunk, the truncated pack's only one (a pack also holding chunks before the cut:
    // truncated-pack.test.ts).
    const { store, service, repo, b, data, id } = await twoCopies(121, 1);
    const l = repo.index.get(id)!;
    const pack = await store.get(`packs/${l.pack}`);
    await store.put(`packs/${l.pack}`, pack.subarray(0, l.offset + Math.floor(l.length / 2)));

    const report = await service.gc({ graceMs: 0 });
    await service.close();
    await afterwards(store, b, data);
    expect(report).toMatchObject({ copiesDamaged: 1, chunksUnreadable: 0 });
  });

  it('gc() repacking the pack of the other copy keeps that copy when the kept one is damaged', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const a = pattern(CHUNK, 122);
    const data = Buffer.concat([a, pattern(CHUNK, 123)]);
    const b = await backUp(service, 'b', data);
    const id = repo.codec.chunkId(a);
    // The second pack: the copy of a, a chunk another backup then references, and a dead one — a third dead: repacked.
    const e = pattern(CHUNK, 124);
    const second = await secondCopy(repo, a, e, pattern(CHUNK, 125));
    const c = await backUp(service, 'c', e); // reuses e from the second pack
    expect(repo.index.get(repo.codec.chunkId(e))!.pack).toBe(second);
    await damageFirstCopy(store, repo, id);

    const report = await service.gc({ graceMs: 0 });
    await service.close();
    await afterwards(store, b, data);
    const other = await openRepo(store);
    expect((await restored(other, c)).equals(e)).toBe(true);
    await other.close();
    expect(report).toMatchObject({ copiesDamaged: 1, chunksUnreadable: 0 });
  });

  it('gc() that writes no pack (repack threshold Infinity) leaves the pack of the good copy alone', async () => {
    const { store, service, repo, b, data, id, second } = await twoCopies(126);
    const damaged = await damageFirstCopy(store, repo, id);
    const before = await keys(store, 'packs/');

    const report = await service.gc({ graceMs: 0, repackThreshold: Infinity });
    expect(await keys(store, 'packs/')).toEqual(before); // nothing written, nothing deleted
    expect((await restored(service, b)).equals(data)).toBe(true); // from the second copy
    await service.close();
    expect(report).toMatchObject({ copiesDamaged: 1, chunksUnreadable: 0, packsDeleted: 0, packsRepacked: 0 });
    expect(before).toContain(`packs/${damaged}`);
    expect(before).toContain(`packs/${second}`);
  });

  it('gc() of a chunk no copy of which reads well deletes none of its copies and reports it', async () => {
    const { store, service, repo, id, second } = await twoCopies(127);
    await damageFirstCopy(store, repo, id);
    const l = repo.index.otherCopies(id).find((x) => x.pack === second)!;
    const pack = await store.get(`packs/${second}`);
    pack[l.offset + 10]! ^= 0x01;
    await store.put(`packs/${second}`, pack);
    const before = await keys(store, 'packs/');

    const report = await service.gc({ graceMs: 0 });
    await service.close();
    expect(await keys(store, 'packs/')).toEqual(before);
    expect(report).toMatchObject({ copiesDamaged: 0, chunksUnreadable: 1, packsLeftUnreadable: 1, packsDeleted: 0 });
  });

  it('gc({ dryRun }) reads the kept copy too: the counts of the run that follows, nothing removed', async () => {
    const { store, service, repo, b, data, id } = await twoCopies(129);
    await damageFirstCopy(store, repo, id);
    const before = await keys(store, 'packs/');

    const dry = await service.gc({ graceMs: 0, dryRun: true });
    expect(await keys(store, 'packs/')).toEqual(before);
    const real = await service.gc({ graceMs: 0 });
    await service.close();
    const counts = ({ copiesDamaged, chunksUnreadable, packsRepacked, packsDeleted }: typeof real) => ({ copiesDamaged, chunksUnreadable, packsRepacked, packsDeleted });
    expect(counts(dry)).toEqual({ copiesDamaged: 1, chunksUnreadable: 0, packsRepacked: 1, packsDeleted: 1 });
    expect(counts(real)).toEqual(counts(dry));
    await afterwards(store, b, data);
  });

  it('gc() whose kept copy reads well still deletes the dead pack holding the other copy', async () => {
    const { store, service, repo, b, data, id, second } = await twoCopies(128);
    const kept = repo.index.get(id)!.pack;

    const report = await service.gc({ graceMs: 0 });
    await service.close();
    expect(report).toMatchObject({ copiesDamaged: 0, chunksUnreadable: 0, packsDeleted: 1, packsRepacked: 0 });
    expect(await keys(store, 'packs/')).toEqual([`packs/${kept}`]);
    await afterwards(store, b, data);
  });
});

describe('gc adopting packs no index object names', () => {
  it('gc() names every unnamed pack holding a copy of a referenced chunk no named pack holds, not only the first (whose copy may be damaged): restore byte-exact', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const data = pattern(CHUNK, 140);
    const b = await backUp(service, 'b', data);
    const id = repo.codec.chunkId(data);
    const second = await secondCopy(repo, data);
    const copies = [repo.index.get(id)!, ...repo.index.otherCopies(id)];
    expect(copies.map((c) => c.pack)).toContain(second);
    await service.close();
    // As an older Cairn or two writers that died could leave it: both packs named by no index
    // object, and the copy in the pack GC comes to first (its listing order) damaged.
    for (const k of await keys(store, 'index/')) await store.delete(k);
    let first: string | undefined;
    for await (const o of store.list('packs/')) {
      first = o.key.slice('packs/'.length);
      break;
    }
    const l = copies.find((c) => c.pack === first)!;
    const pack = await store.get(`packs/${l.pack}`);
    pack[l.offset + Math.floor(l.length / 2)]! ^= 0x40;
    await store.put(`packs/${l.pack}`, pack);

    const s2 = await openRepo(store);
    const report = await s2.gc({ graceMs: 0 });
    await s2.close();
    const other = await openRepo(store);
    expect((await other.verify(b)).problems).toEqual([]);
    expect((await restored(other, b)).equals(data)).toBe(true);
    await other.close();
    expect(report).toMatchObject({ packsAdopted: 2, packsDeleted: 0 });
    expect((await keys(store, 'packs/')).length).toBe(2);
  });
});

describe("GC's check of the copies it keeps, in batches", () => {
  it('readKeptCopies over more ids than one batch reads them a batch at a time and still finds every damaged copy', async () => {
    const store = new CountingStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const data = pattern(3 * CHUNK, 130); // one 1 MiB pack
    await backUp(service, 'b', data);
    const chunks = Array.from({ length: 3 }, (_, k) => data.subarray(k * CHUNK, (k + 1) * CHUNK));
    const ids = chunks.map((c) => repo.codec.chunkId(c)).sort((x, y) => repo.index.get(x)!.offset - repo.index.get(y)!.offset);
    const kept = repo.index.get(ids[0]!)!.pack;
    expect(ids.every((id) => repo.index.get(id)!.pack === kept)).toBe(true); // one pack, in pack order
    await secondCopy(repo, chunks[0]!, ...chunks.slice(1)); // a second copy of each, in another pack
    await damageFirstCopy(store, repo, ids[1]!); // in the first batch
    await damageFirstCopy(store, repo, ids[2]!); // in the second
    store.reset();

    const found = await readKeptCopies(repo, ids, undefined, 2);
    expect(found.damaged).toEqual(new Map([[ids[1], kept], [ids[2], kept]]));
    expect(found.unreadable).toEqual(new Set());
    // Batches of 2 and 1 ids: one ranged read of the kept pack each (all 3 fit one range).
    expect(store.count('get', `packs/${kept}`)).toBe(2);
    await service.close();
  });
});

describe("GC's repack, in batches", () => {
  it('collectGarbage copies the live chunks of a repacked pack forward a batch at a time: the backup restores byte-exact', async () => {
    const store = new CountingStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const data = pattern(3 * CHUNK, 131); // one 1 MiB pack
    const first = await backUp(service, 'a', data);
    const live = data.subarray(0, 2 * CHUNK);
    const b = await backUp(service, 'b', live); // the first two chunks again
    const pack = repo.index.get(repo.codec.chunkId(live.subarray(0, CHUNK)))!.pack;
    await service.delete(first); // a third of the pack is dead now: GC repacks it
    store.reset();

    const report = await collectGarbage(repo, { graceMs: 0 }, 1);
    expect(report).toMatchObject({ packsRepacked: 1, chunksRemoved: 1 });
    // Two live chunks in batches of one: one ranged read of the repacked pack each.
    expect(store.count('get', `packs/${pack}`)).toBe(2);
    await service.close();
    const other = await openRepo(store);
    expect((await restored(other, b)).equals(live)).toBe(true);
    expect((await other.verify()).problems).toEqual([]);
    await other.close();
  });
});
