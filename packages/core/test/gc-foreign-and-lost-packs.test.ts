/**
 * GC and what it finds under `packs/` that is not as the index says: keys that name no pack (a
 * user's file, one in a subdirectory) are counted and never deleted, as the catalog's unknown keys
 * are; packs the index names that the store lost are reported (GcReport.packsLost, chunksLost),
 * not dropped silently.
 */
import { describe, expect, it } from 'vitest';
import { writeIndexObject } from '../src/repository/pack-writer.js';
import { chunkedRig, closedAfterEach, filledVolume, keys, MiB } from './helpers.js';

const keep = closedAfterEach();

describe('gc and keys under packs/ and chunklists/ that name no pack or page', () => {
  it('counts them and leaves them alone, in a dry run and a real one', async () => {
    const { store, service, volumes, manager } = await chunkedRig();
    keep(service);
    const v = await filledVolume(volumes, 2 * MiB);
    const b = await manager.backup({ volumeId: v.id });
    const foreign = ['packs/my-notes.txt', 'packs/keep/README', 'chunklists/notes.txt'];
    for (const key of foreign) await store.put(key, Buffer.from('important'));
    const packs = await keys(store, 'packs/');

    for (const dryRun of [true, false]) {
      expect(await service.gc({ graceMs: 0, dryRun })).toMatchObject({ packsDeleted: 0, pagesDeleted: 0, bytesFreed: 0, packKeysUnknown: 2, pageKeysUnknown: 1, packsLost: 0, chunksLost: 0 });
    }
    expect(await keys(store, 'packs/')).toEqual(packs);
    for (const key of foreign) expect((await store.get(key)).toString()).toBe('important');
    expect((await manager.verify(b.id)).problems).toEqual([]);
  });
});

describe('gc and a pack the store lost', () => {
  it('reports the pack and the referenced chunks only it held, and drops it from the index', async () => {
    const { store, service, volumes, manager } = await chunkedRig();
    keep(service);
    const v = await filledVolume(volumes, 4 * MiB);
    const b = await manager.backup({ volumeId: v.id });
    await service.repository.index.refresh();
    const [lostPack, entries] = [...service.repository.index.packs()][0]!;
    const held = new Set(entries.map((e) => e.id)).size;
    expect(held).toBeGreaterThan(0);
    await store.delete(`packs/${lostPack}`); // behind Cairn's back

    const dry = await service.gc({ graceMs: 0, dryRun: true });
    expect(dry).toMatchObject({ packsLost: 1, chunksLost: held });
    const report = await service.gc({ graceMs: 0 });
    expect(report).toMatchObject({ packsLost: 1, chunksLost: held, packsDeleted: 0 });
    // Dropped from the index: the next GC no longer sees the pack, but still the chunks backups name.
    expect(await service.gc({ graceMs: 0 })).toMatchObject({ packsLost: 0, chunksLost: held });
    expect((await manager.verify(b.id)).problems).not.toEqual([]);
  });

  it('counts no chunk lost when another pack holds a copy of each', async () => {
    const { store, service, volumes, manager } = await chunkedRig();
    keep(service);
    const v = await filledVolume(volumes, 2 * MiB);
    await manager.backup({ volumeId: v.id });
    const index = service.repository.index;
    await index.refresh();
    const [packId, entries] = [...index.packs()][0]!;
    // A second copy of the pack under another id, named by an index object of its own.
    const copy = 'f'.repeat(64);
    await store.put(`packs/${copy}`, await store.get(`packs/${packId}`));
    await writeIndexObject(store, service.repository.codec, index, [[copy, [...entries]]]);
    await store.delete(`packs/${packId}`);
    expect(await service.gc({ graceMs: 0 })).toMatchObject({ packsLost: 1, chunksLost: 0 });
  });
});
