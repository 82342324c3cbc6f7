/**
 * A pack GC plans to repack only because the guard found its copy of a chunk damaged (the chunk is
 * rescued: copied forward from a good copy first), and which it leaves whole when that good copy
 * fails on the rescue's own read (bytes damaged between the guard's read and the rescue's), still
 * has its turn in the repack: the chunks the index resolves to it whose other copy GC removes were
 * left by the guard to that turn, and one damaged there is copied forward from the copy GC removes
 * (gc-repack.ts). Over the memory store, wrapped to damage one pack's second ranged read.
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ByteRange, type CallOptions } from '../src/index.js';
import { backUp, CHUNK, openRepo, pattern, restored } from './buffer-backups.js';
import { MiB, keys } from './helpers.js';
import { damageCopy, writePack } from './pack-copies.js';

/** A memory store whose second ranged read of object `spoiled` (once set) returns its bytes with one flipped. */
class SpoilingStore extends MemoryObjectStore {
  spoiled: string | undefined;
  private reads = 0;
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    const got = await super.get(key, range, options);
    if (range && key === this.spoiled && ++this.reads === 2) got[Math.floor(got.length / 2)]! ^= 0x40;
    return got;
  }
}

describe('gc whose rescued chunk fails on the rescue read', () => {
  it('still reads the pack it leaves whole for the chunks whose other copy it removes: no chunk is lost', async () => {
    const store = new SpoilingStore('mem');
    const service = await openRepo(store, 4 * MiB);
    const repo = service.repository;
    const [x, y, z, g2, g4] = [0, 1, 2, 3, 4].map((k) => pattern(CHUNK, 710 + k));
    const [xId, yId, zId] = [x!, y!, z!].map((c) => repo.codec.chunkId(c));
    // P1 holds X and Y (the index resolves both to it), P3 Z (resolved to it) and a copy of Y,
    // P2 a copy of X and a dead chunk, P4 a copy of Z and a dead chunk.
    await backUp(service, 'xy', Buffer.concat([x!, y!]));
    const p1 = repo.index.get(xId)!.pack;
    const p3 = await writePack(repo, [z!, y!]);
    const p2 = await writePack(repo, [x!, g2!]);
    const p4 = await writePack(repo, [z!, g4!]);
    expect(new Set([p1, p2, p3, p4]).size).toBe(4);
    expect([repo.index.get(yId)!.pack, repo.index.get(zId)!.pack]).toEqual([p1, p3]);
    const all = await backUp(service, 'xyz', Buffer.concat([x!, y!, z!]));
    // X and Y are damaged in P1, Z in P3: the only good copy of Y is P3's.
    for (const [id, pack] of [[xId, p1], [yId, p1], [zId, p3]] as const) await damageCopy(repo, id, pack);
    // The guard proves X's kept copy by reading P2 (its first read); the rescue reads it again.
    store.spoiled = `packs/${p2}`;

    // Threshold 0.75: P3 (half dead) is repacked only once the guard finds Z damaged in it.
    const report = await service.gc({ graceMs: 0, repackThreshold: 0.75 });
    expect(report).toMatchObject({ copiesDamaged: 2, chunksUnreadable: 1, packsLeftUnreadable: 2 });
    const packs = await keys(store, 'packs/');
    expect(packs).toEqual(expect.arrayContaining([`packs/${p1}`, `packs/${p2}`])); // kept whole for X
    expect(packs).not.toContain(`packs/${p3}`);
    await service.close();

    // P2's bytes were never damaged in the store: X reads from it again; Y went forward from P3.
    const other = await openRepo(store, 4 * MiB);
    expect((await other.verify(all)).problems).toEqual([]);
    expect((await restored(other, all)).equals(Buffer.concat([x!, y!, z!]))).toBe(true);
    await other.close();
  });
});
