/**
 * A backup whose final clear of its volume's `backing-up` state fails (a warning) leaves that state
 * in the catalog; once the backup's flow is over, the state is judged as recovery settles it
 * (cleared): the volume is shown as its driver has it, and may be backed up, restored to, changed
 * and deleted without waiting for a recovery. A live backup's state still holds the volume.
 */
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type Catalog } from '../src/index.js';
import { filledVolume, MiB, over } from './helpers.js';

/** A manager whose catalog fails the next clear of a volume state (UNAVAILABLE) while `failClear` is set. */
function managerWithFailingClear() {
  const volumes = new MemoryVolumeDriver();
  const shared = new MemoryCatalog();
  const flags = { failClear: false };
  const catalog: Catalog = over(shared, {
    clearVolumeState: async (volumeId: string) => {
      if (flags.failClear) {
        flags.failClear = false;
        throw new CairnError('UNAVAILABLE', 'catalog hiccup');
      }
      return shared.clearVolumeState(volumeId);
    },
  });
  const manager = new BackupManager({ volumes, targets: { memory: new MemoryBackupService('memory') }, catalog });
  const warnings: CairnError[] = [];
  manager.on('warning', (w) => warnings.push(w));
  return { volumes, shared, manager, flags, warnings };
}

describe("a backup whose clear of its volume's state failed", () => {
  it('leaves the volume usable at once: shown as the driver has it, backed up again, restored to, changed and deleted', async () => {
    const { volumes, shared, manager, flags, warnings } = managerWithFailingClear();
    const v = await filledVolume(volumes, 2 * MiB);
    flags.failClear = true;
    const first = await manager.backup({ volumeId: v.id });
    expect(first.status).toBe('available');
    expect(warnings.map((w) => w.code)).toEqual(['UNAVAILABLE']);
    // The state is still in the catalog, naming the ended backup.
    expect(await shared.getVolumeState(v.id)).toMatchObject({ status: 'backing-up', backupId: first.id });
    expect((await manager.getVolume(v.id)).status).toBe('available');
    // A new backup takes the volume over (replacing the state), and clears it when done.
    const second = await manager.backup({ volumeId: v.id, incremental: true });
    expect(second).toMatchObject({ status: 'available', parentId: first.id });
    expect(await shared.getVolumeState(v.id)).toBeUndefined();
    // Again left behind: a restore to the volume, a metadata change and a delete go through too.
    flags.failClear = true;
    const third = await manager.backup({ volumeId: v.id });
    expect(await shared.getVolumeState(v.id)).toMatchObject({ status: 'backing-up', backupId: third.id });
    await manager.restore({ backupId: first.id, volumeId: v.id });
    expect(await shared.getVolumeState(v.id)).toBeUndefined();
    flags.failClear = true;
    await manager.backup({ volumeId: v.id });
    expect((await manager.updateVolumeMetadata(v.id, { set: { k: 'v' } })).metadata).toMatchObject({ k: 'v' });
    await manager.deleteVolume(v.id);
    await expect(volumes.getVolume(v.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it("a backing-up state whose backup is creating and owned by a live process still holds the volume; one whose owner died does not", async () => {
    const { volumes, shared, manager } = managerWithFailingClear();
    const v = await filledVolume(volumes, 2 * MiB);
    const base = await manager.backup({ volumeId: v.id });
    const since = new Date().toISOString();
    await shared.putBackup({ ...base, id: 'running-elsewhere', status: 'creating', owner: { host: hostname(), pid: process.ppid } });
    await shared.putVolumeState({ volumeId: v.id, status: 'backing-up', previousStatus: 'available', backupId: 'running-elsewhere', since });
    expect((await manager.getVolume(v.id)).status).toBe('backing-up');
    await expect(manager.startBackup({ volumeId: v.id })).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeStatus: 'backing-up' } });
    await expect(manager.deleteVolume(v.id)).rejects.toMatchObject({ code: 'CONFLICT' });
    // Its owner died (a pid above any Linux pid_max): the state is judged as recovery would clear it.
    await shared.putBackup({ ...base, id: 'running-elsewhere', status: 'creating', owner: { host: hostname(), pid: 2 ** 22 + 4321 } });
    expect((await manager.getVolume(v.id)).status).toBe('available');
    expect(await manager.backup({ volumeId: v.id })).toMatchObject({ status: 'available' });
  });
});
