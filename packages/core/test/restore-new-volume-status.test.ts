import { describe, expect, it } from 'vitest';
import { backedUpRig, gateRwAttach, restoreDiedAtAttach } from './restore-rig.js';

/**
 * The new volume of a restore is `restoring-backup` from its creation, as Cinder's is, also before
 * the job has laid its flow state over it (while it waits for the volume's lock or its attach):
 * getVolume never shows it `available` while it holds no backup yet. Once the restore that created
 * it can no longer run (its process died before the flow state), it is shown `error_restoring`,
 * as recovery settles it (it deletes the volume).
 */

describe('the new volume of a restore, before its job lays a flow state over it', () => {
  it('is shown restoring-backup while the job waits for its attach, and available once restored', async () => {
    const { volumes, shared, manager, backup } = await backedUpRig();
    const g = gateRwAttach(volumes);
    const { job, volume } = await manager.startRestore({ backupId: backup.id, newVolume: { name: 'new' } });
    await g.reached;
    expect(await shared.getVolumeState(volume.id)).toBeUndefined();
    expect(await manager.getVolume(volume.id)).toMatchObject({ status: 'restoring-backup' });
    // Refused naming the status getVolume shows (not the error_restoring of a restore that failed).
    await expect(manager.backup({ volumeId: volume.id })).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeId: volume.id, volumeStatus: 'restoring-backup' } });
    await expect(manager.restore({ backupId: backup.id, volumeId: volume.id })).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeId: volume.id, volumeStatus: 'restoring-backup' } });
    g.release();
    await job.done;
    expect(await manager.getVolume(volume.id)).toMatchObject({ status: 'available' });
  });

  it('is shown error_restoring once the process of its restore died before the flow state, and recovery deletes it', async () => {
    const { volumes, shared, manager, src, backup } = await backedUpRig();
    // A process that dies at its job's attach: what it wrote names a process that is gone, and
    // nothing it would write after (its cleanup) reaches the catalog or the driver.
    const { volume, died } = await restoreDiedAtAttach(shared, volumes, backup.id);
    expect(died).toBe(true);
    expect(await shared.getVolumeState(volume.id)).toBeUndefined();
    expect(await manager.getVolume(volume.id)).toMatchObject({ status: 'error_restoring' });
    await expect(manager.backup({ volumeId: volume.id })).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeId: volume.id, volumeStatus: 'error_restoring' } });
    expect(await manager.recover()).toMatchObject({ removedVolumes: [volume.id], errors: [] });
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
  });
});

/**
 * Contract (delete-volume.ts, assertNoRunningRestore; new-volume-intents.ts, intentVolumeStatus):
 * a volume's delete and metadata change judge a restore's new volume as getVolume shows it and as
 * recovery settles it. A volume whose restore's reader is gone is `error_restoring` and may be
 * deleted (Cinder's rule) even while another restore of the same backup keeps it `restoring`.
 */
describe('the new volume of a restore whose reader is gone, while another restore reads its backup', () => {
  it('is error_restoring for getVolume, delete and metadata alike, and the other restore goes on', async () => {
    const { volumes, shared, manager, src, backup } = await backedUpRig();
    // The first restore's process dies at its attach, as in the test above.
    const left = await restoreDiedAtAttach(shared, volumes, backup.id);
    expect(left.died).toBe(true);
    // A second restore of the same backup, in this (live) process, waits at its attach: the
    // backup stays `restoring`, read by a reader that is alive.
    const g = gateRwAttach(volumes);
    const running = await manager.startRestore({ backupId: backup.id, newVolume: { name: 'second' } });
    await g.reached;
    expect(await shared.getBackup(backup.id)).toMatchObject({ status: 'restoring' });
    expect(await manager.getVolume(running.volume.id)).toMatchObject({ status: 'restoring-backup' });
    expect(await manager.getVolume(left.volume.id)).toMatchObject({ status: 'error_restoring' });
    // The running restore's volume is refused as restoring-backup; the abandoned one is deleted.
    await expect(manager.deleteVolume(running.volume.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeStatus: 'restoring-backup' } });
    await expect(manager.updateVolumeMetadata(running.volume.id, { set: { k: 'v' } })).rejects.toMatchObject({ code: 'CONFLICT' });
    await manager.deleteVolume(left.volume.id);
    expect((await volumes.listVolumes()).map((v) => v.id).sort()).toEqual([src.id, running.volume.id].sort());
    g.release();
    await running.job.done;
    expect(await manager.getVolume(running.volume.id)).toMatchObject({ status: 'available' });
    // Recovery then settles the abandoned restore's intent: no volume of it is left to delete.
    expect(await manager.recover()).toMatchObject({ removedVolumes: [], errors: [] });
    expect(await shared.listNewVolumeIntents()).toEqual([]);
  });
});
