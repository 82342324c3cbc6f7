/**
 * A volume's `backing-up` state is judged by its backup's record (judgedVolumeState). When that
 * record cannot be read (getBackup failing with `CORRUPT`, or `UNAVAILABLE` in a store outage),
 * the backup's flow cannot be judged over, so the state stands as it did before states were
 * judged: the volume is shown `backing-up` and backups, restores, deletes and metadata changes of
 * it are `CONFLICT`, with nothing changed. These calls used to fail with the record's error instead.
 * Once the record reads again, the state is judged as usual.
 */
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type Catalog, type ErrorCode } from '../src/index.js';
import { filledVolume, MiB, over } from './helpers.js';

/** A manager whose catalog fails getBackup of `flags.failing` with `flags.code`. */
function managerWithUnreadableRecord() {
  const volumes = new MemoryVolumeDriver();
  const shared = new MemoryCatalog();
  const flags: { failing?: string; code: ErrorCode } = { code: 'CORRUPT' };
  const catalog: Catalog = over(shared, {
    getBackup: async (backupId: string) => {
      if (backupId === flags.failing) throw new CairnError(flags.code, `record of backup ${backupId} cannot be read`, { driver: 'catalog' });
      return shared.getBackup(backupId);
    },
  });
  const manager = new BackupManager({ volumes, targets: { memory: new MemoryBackupService('memory') }, catalog });
  return { volumes, shared, manager, flags };
}

describe("a backing-up state whose backup's record cannot be read", () => {
  for (const code of ['CORRUPT', 'UNAVAILABLE'] as const) {
    it(`(${code}) stands: the volume is shown backing-up and its flows, delete and metadata changes are CONFLICT, nothing changed`, async () => {
      const { volumes, shared, manager, flags } = managerWithUnreadableRecord();
      const v = await filledVolume(volumes, 2 * MiB);
      const base = await manager.backup({ volumeId: v.id });
      // A backup whose process died (a pid above any Linux pid_max): over, were its record readable.
      const since = new Date().toISOString();
      await shared.putBackup({ ...base, id: 'damaged', status: 'creating', owner: { host: hostname(), pid: 2 ** 22 + 4321 } });
      await shared.putVolumeState({ volumeId: v.id, status: 'backing-up', previousStatus: 'available', backupId: 'damaged', since });
      flags.failing = 'damaged';
      flags.code = code;

      expect(await manager.getVolume(v.id)).toMatchObject({ id: v.id, status: 'backing-up', previousStatus: 'available' });
      const conflict = { code: 'CONFLICT', details: { volumeId: v.id, volumeStatus: 'backing-up' } };
      await expect(manager.deleteVolume(v.id)).rejects.toMatchObject(conflict);
      await expect(manager.updateVolumeMetadata(v.id, { set: { k: 'v' } })).rejects.toMatchObject(conflict);
      await expect(manager.startBackup({ volumeId: v.id })).rejects.toMatchObject(conflict);
      await expect(manager.startRestore({ backupId: base.id, volumeId: v.id })).rejects.toMatchObject(conflict);
      // Nothing changed: the volume, its metadata, the state, the backups.
      expect((await volumes.getVolume(v.id)).metadata).toEqual(v.metadata);
      expect(await shared.getVolumeState(v.id)).toEqual({ volumeId: v.id, status: 'backing-up', previousStatus: 'available', backupId: 'damaged', since });
      expect((await shared.listBackups()).map((b) => [b.id, b.status])).toEqual(
        expect.arrayContaining([
          [base.id, 'available'],
          ['damaged', 'creating'],
        ]),
      );
      expect(await shared.listBackups()).toHaveLength(2);

      // The record reads again: the flow is judged over, and the volume is usable at once.
      flags.failing = undefined;
      expect((await manager.getVolume(v.id)).status).toBe('available');
      expect((await manager.updateVolumeMetadata(v.id, { set: { k: 'v' } })).metadata).toMatchObject({ k: 'v' });
      expect(await manager.backup({ volumeId: v.id })).toMatchObject({ status: 'available' });
      expect(await shared.getVolumeState(v.id)).toBeUndefined();
    });
  }
});
