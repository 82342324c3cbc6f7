import { describe, expect, it } from 'vitest';
import { chunkedRig, expectCode, filledVolume, gate, MiB } from './helpers.js';
import { BackupManager, ChunkedBackupService, MemoryObjectStore, RepositoryCatalog, type MemoryVolumeDriver } from '../src/index.js';

// A record is removed in its section (BackupClaims), so a read-compare-write of it in a section
// of another process sharing the repository (resetState's final write: reset-state.ts) never
// writes back a record removed between its read and its write.

/** A second "process" on the rig's store: its own service, catalog and manager. */
async function otherProcess(store: MemoryObjectStore, volumes: MemoryVolumeDriver) {
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0 });
  const catalog = new RepositoryCatalog(service.repository);
  return { service, catalog, manager: new BackupManager({ volumes, targets: { repo: service }, catalog }) };
}

/** `p`, or `'still waiting'` after `ms` (longer than a waiting section's poll, up to 375 ms). */
const within = <T>(p: Promise<T>, ms: number): Promise<T | 'still waiting'> => Promise.race([p, new Promise<'still waiting'>((r) => setTimeout(() => r('still waiting'), ms))]);

describe("a delete's removal of its record", () => {
  it("waits for another process's section of the record: a reset's read-compare-write there never brings the deleted record back", async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const backup = await a.manager.backup({ volumeId: v.id });
    // The data delete waits until the other process has read the record in its section.
    const dataDelete = gate();
    const del = a.service.delete.bind(a.service);
    a.service.delete = async (b, o) => (await dataDelete.arrive(), del(b, o));
    const deleting = a.manager.deleteBackup(backup.id);
    await dataDelete.reached;
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    // What a reset's final write does (reset-state.ts `write`), in the record's section: read,
    // compare, put. The delete runs to its end meanwhile, as far as it can.
    const written = await b.catalog.section(backup.id, async () => {
      const current = await b.catalog.getBackup(backup.id);
      expect(current.status).toBe('deleting');
      dataDelete.release();
      const delete1 = await within(deleting, 3_000);
      await b.catalog.putBackup({ ...current, status: 'error', owner: undefined, failReason: 'INTERNAL: reset to error (was deleting)', updatedAt: new Date().toISOString() });
      return delete1;
    });
    await deleting;
    await expectCode(b.catalog.getBackup(backup.id), 'NOT_FOUND');
    await expectCode(a.manager.getBackup(backup.id), 'NOT_FOUND');
    // The delete's removal waited for that section.
    expect(written).toBe('still waiting');
    expect(await a.service.repository.locks.list()).toEqual([]);
  });
});
