import { describe, expect, it, vi } from 'vitest';
import type { ObjectStore } from '../src/index.js';
import { RepositoryCatalog, volumeEntryKey } from '../src/repository/repository-catalog.js';
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

describe('gc and a record written again while it runs', () => {
  // A delete removed a record, then failed to remove its volume entry (written long ago) and put
  // the record back (`error_deleting`: finishDelete) while GC ran. Since a record update writes its
  // entry only when it is missing (0e9a0e9), that put leaves the entry's old date: GC, which had
  // listed the records without it, took the entry for an orphan and deleted it, leaving a record
  // no volume listing finds. GC now deletes an entry only while its record is still missing.
  it('keeps the volume entry of a record put back after GC listed the records', async () => {
    const { store, service, volumes, manager } = await chunkedRig();
    const v = await filledVolume(volumes, 2 * MiB);
    const b = await manager.backup({ volumeId: v.id });
    const entry = volumeEntryKey(b);
    await oldKey(store, entry); // the entry as its backup's creation left it, 20 minutes ago
    await store.delete(`catalog/backups/${b.id}`); // the delete's first step; its entry's delete failed
    const catalog = new RepositoryCatalog(service.repository);
    const list = store.list.bind(store);
    let putBack = false;
    store.list = (prefix, options) => {
      if (prefix !== 'catalog/by-volume/' || putBack) return list(prefix, options);
      putBack = true;
      // The failed delete puts the record back just as GC lists the entries (after the records).
      return (async function* () {
        await catalog.putBackup({ ...b, status: 'error_deleting', failReason: 'UNAVAILABLE: entry delete failed' });
        yield* list(prefix, options);
      })();
    };
    const report = await service.gc({ graceMs: 0 });
    expect(putBack).toBe(true);
    expect(report.catalogEntriesDeleted).toBe(0);
    expect(await keys(store, 'catalog/by-volume/')).toEqual([entry]);
    expect((await manager.listBackups({ volumeId: v.id })).map((x) => [x.id, x.status])).toEqual([[b.id, 'error_deleting']]);
  });
});
