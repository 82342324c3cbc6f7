/**
 * What a backup killed within the grace period leaves (a pack no index object names, a chunk list
 * page no manifest names) is left alone by GC and counted in its report: `packsInGrace`,
 * `pagesInGrace` (garbage-collector.ts); past the grace period it is deleted.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore } from '../src/index.js';
import { chunkedRig, closedAfterEach, filledVolume, keys, MiB } from './helpers.js';

const keep = closedAfterEach();

describe('gc of a killed backup\'s young leftovers', () => {
  it('counts an unnamed young pack in packsInGrace and an unnamed young page in pagesInGrace, dry run and real, and deletes them once old', async () => {
    const store = new MemoryObjectStore('mem');
    const { service, volumes, manager } = await chunkedRig(store);
    keep(service);
    await manager.backup({ volumeId: (await filledVolume(volumes, 2 * MiB, 3)).id });
    // Copies of a stored pack and page under new names: what a backup killed before naming them leaves.
    const [pack] = await keys(store, 'packs/');
    const [page] = await keys(store, 'chunklists/');
    const strayPack = `packs/${randomBytes(32).toString('hex')}`;
    const strayPage = `chunklists/${randomBytes(32).toString('hex')}`;
    await store.put(strayPack, await store.get(pack!));
    await store.put(strayPage, await store.get(page!));

    const young = { packsInGrace: 1, pagesInGrace: 1, packsDeleted: 0, pagesDeleted: 0, bytesFreed: 0 };
    expect(await service.gc({ dryRun: true })).toMatchObject(young);
    expect(await service.gc({})).toMatchObject(young);
    expect(await keys(store, 'packs/')).toContain(strayPack);
    expect(await keys(store, 'chunklists/')).toContain(strayPage);

    const old = await service.gc({ graceMs: 0 });
    expect(old).toMatchObject({ packsInGrace: 0, pagesInGrace: 0, packsDeleted: 1, pagesDeleted: 1 });
    expect(await keys(store, 'packs/')).not.toContain(strayPack);
    expect(await keys(store, 'chunklists/')).not.toContain(strayPage);
  });
});
