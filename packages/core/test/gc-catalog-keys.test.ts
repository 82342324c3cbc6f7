import { describe, expect, it, vi } from 'vitest';
import type { ObjectStore } from '../src/index.js';
import { volumeEntryKey } from '../src/repository/repository-catalog.js';
import { chunkedRig, filledVolume, keys, MiB } from './helpers.js';

/** Writes an empty object at `key`, dated 20 minutes ago (past GC's 15-minute floor). */
async function oldKey(store: ObjectStore, key: string): Promise<void> {
  vi.useFakeTimers({ toFake: ['Date'] });
  try {
    vi.setSystemTime(Date.now() - 20 * 60_000);
    await store.put(key, Buffer.alloc(0));
  } finally {
    vi.useRealTimers();
  }
}

describe('gc and keys under catalog/by-volume/', () => {
  it('deletes only what the catalog reads as a volume entry; a nested or misplaced key is left alone and counted', async () => {
    const { store, service, volumes, manager } = await chunkedRig();
    const v = await filledVolume(volumes, 2 * MiB);
    const b = await manager.backup({ volumeId: v.id });
    const ghostId = '00000000-0000-4000-8000-00000000dead';
    const ghost = volumeEntryKey({ volumeId: v.id, createdAt: new Date().toISOString(), id: ghostId });
    const name = ghost.slice(ghost.lastIndexOf('/') + 1);
    const dir = ghost.slice(0, ghost.lastIndexOf('/') + 1);
    const nested = `${dir}copied/${name}`; // one level too deep: no listing reads it
    const misplaced = `catalog/by-volume/${name}`; // outside any volume's directory
    for (const key of [ghost, nested, misplaced]) await oldKey(store, key);

    expect(await service.gc({ graceMs: 0, dryRun: true })).toMatchObject({ catalogEntriesDeleted: 1, catalogKeysUnknown: 2 });
    expect(await service.gc({ graceMs: 0 })).toMatchObject({ catalogEntriesDeleted: 1, catalogKeysUnknown: 2 });
    expect(await keys(store, 'catalog/by-volume/')).toEqual([misplaced, nested, volumeEntryKey(b)].sort());
    expect((await manager.listBackups({ volumeId: v.id })).map((x) => x.id)).toEqual([b.id]);
    expect((await manager.listBackups()).map((x) => x.id)).toEqual([b.id]);
  });
});
