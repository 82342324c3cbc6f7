import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { MiB, filledVolume, over } from './helpers.js';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type Catalog, type ProcessOwner } from '../src/index.js';
import { backedUpRig, gateRwAttach, restoreDiedAtAttach } from './restore-rig.js';
import { LEGACY_INTENT_PREFIX, RESTORE_JOB_METADATA_KEY } from '../src/flow/new-volume-intents.js';

/**
 * Contract (BackupManager.listVolumes, volume-views.ts): every volume listed as getVolume shows
 * it, judged from one listing of the catalog's flow states and one of its new-volume intents; the
 * catalog reads of a listing do not grow with the volumes a restore created and that keep its
 * job's id (`cairn.restore-job`) once restored.
 */

/** A process on another host: judged alive from here. */
const elsewhere: ProcessOwner = { host: `not-${hostname()}`, pid: 1 };

/** The catalog reads `catalog`'s methods make through the returned catalog, counted in `reads.n`. */
function counted(catalog: Catalog) {
  const reads = { n: 0 };
  const read =
    <K extends 'getBackup' | 'listBackups' | 'latestBackup' | 'listBackupPage' | 'getVolumeState' | 'listVolumeStates' | 'getNewVolumeIntent' | 'listNewVolumeIntents'>(k: K) =>
    (...args: Parameters<Catalog[K]>) => {
      reads.n++;
      return (catalog[k] as (...a: Parameters<Catalog[K]>) => ReturnType<Catalog[K]>)(...args);
    };
  const wrapped = over(catalog, {
    getBackup: read('getBackup'),
    listBackups: read('listBackups'),
    latestBackup: read('latestBackup'),
    listBackupPage: read('listBackupPage'),
    getVolumeState: read('getVolumeState'),
    listVolumeStates: read('listVolumeStates'),
    getNewVolumeIntent: read('getNewVolumeIntent'),
    listNewVolumeIntents: read('listNewVolumeIntents'),
  });
  return { wrapped, reads };
}

const shown = (v: { id: string; status: string; previousStatus?: string }) => ({ id: v.id, status: v.status, previousStatus: v.previousStatus });

describe('BackupManager.listVolumes', () => {
  it('shows every kind of volume as getVolume does', async () => {
    const { volumes, shared, manager, src, backup } = await backedUpRig();
    const since = new Date().toISOString();

    // Restored completely: keeps its job's id, its intent gone.
    const restored = await manager.startRestore({ backupId: backup.id, newVolume: { name: 'restored' } });
    await restored.job.done;
    expect(restored.volume.metadata?.[RESTORE_JOB_METADATA_KEY]).toBeDefined();

    // A restore whose process died at its attach: its intent names a reader that is gone.
    const left = await restoreDiedAtAttach(shared, volumes, backup.id, 'left');
    expect(left.died).toBe(true);

    // A volume of a legacy intent (a flow state keyed by the job, naming no reader): judged by its
    // backup's record, which the restore waiting below keeps `restoring`.
    const legacy = await volumes.createVolume({ name: 'legacy', size: MiB, metadata: { [RESTORE_JOB_METADATA_KEY]: 'legacy-job' } });
    await shared.putVolumeState({ volumeId: `${LEGACY_INTENT_PREFIX}legacy-job`, status: 'restoring-backup', previousStatus: 'available', backupId: backup.id, since });

    // Flow states: a live backup's, one whose backup's flow is over, a failed restore's.
    const plain = await volumes.createVolume({ name: 'plain', size: MiB });
    const backingUp = await volumes.createVolume({ name: 'backing-up', size: MiB });
    const running = 'running-backup';
    await shared.putBackup({ ...(await shared.getBackup(backup.id)), id: running, volumeId: backingUp.id, status: 'creating', owner: elsewhere, checkpointId: undefined });
    await shared.putVolumeState({ volumeId: backingUp.id, status: 'backing-up', previousStatus: 'available', backupId: running, since });
    const stale = await volumes.createVolume({ name: 'stale', size: MiB });
    await shared.putVolumeState({ volumeId: stale.id, status: 'backing-up', previousStatus: 'available', backupId: backup.id, since });
    const failed = await volumes.createVolume({ name: 'failed', size: MiB });
    await shared.putVolumeState({ volumeId: failed.id, status: 'error_restoring', previousStatus: 'available', backupId: backup.id, since });

    // A restore to a new volume waiting at its attach: its intent recorded, no flow state yet.
    const g = gateRwAttach(volumes);
    const waiting = await manager.startRestore({ backupId: backup.id, newVolume: { name: 'waiting' } });
    await g.reached;

    try {
      const listed = await manager.listVolumes();
      const one = await Promise.all((await volumes.listVolumes()).map((v) => manager.getVolume(v.id)));
      expect(listed.map(shown)).toEqual(one.map(shown));
      expect(listed).toEqual(one);
      const status = Object.fromEntries(listed.map((v) => [v.id, v.status]));
      expect(status).toEqual({
        [src.id]: 'available',
        [restored.volume.id]: 'available',
        [left.volume.id]: 'error_restoring',
        [legacy.id]: 'restoring-backup',
        [plain.id]: 'available',
        [backingUp.id]: 'backing-up',
        [stale.id]: 'available',
        [failed.id]: 'error_restoring',
        [waiting.volume.id]: 'restoring-backup',
      });
    } finally {
      g.release();
      await waiting.job.done;
    }
    expect((await manager.listVolumes()).find((v) => v.id === waiting.volume.id)).toMatchObject({ status: 'available' });
  });

  it('reads the catalog as often for 12 restored volumes as for 2', async () => {
    const volumes = new MemoryVolumeDriver();
    const shared = new MemoryCatalog();
    const { wrapped, reads } = counted(shared);
    const manager = new BackupManager({ volumes, targets: { mem: new MemoryBackupService('mem') }, catalog: wrapped });
    const src = await filledVolume(volumes, MiB, 1);
    const backup = await manager.backup({ volumeId: src.id });
    const restoreOne = async () => (await manager.startRestore({ backupId: backup.id, newVolume: {} })).job.done;
    const listReads = async () => {
      reads.n = 0;
      const views = await manager.listVolumes();
      expect(views.map((v) => v.status)).toEqual(views.map(() => 'available'));
      return { reads: reads.n, volumes: views.length };
    };
    for (let i = 0; i < 2; i++) await restoreOne();
    const few = await listReads();
    for (let i = 0; i < 10; i++) await restoreOne();
    const many = await listReads();
    expect([few.volumes, many.volumes]).toEqual([3, 13]);
    expect(many.reads).toBe(few.reads);
    expect(few.reads).toBeLessThanOrEqual(2);
  });
});
