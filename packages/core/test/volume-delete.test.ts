import { describe, expect, it } from 'vitest';
import { chunkedRig, contents, expectCode, filledVolume, gate, MiB, over } from './helpers.js';
import { BackupManager, ChunkedBackupService, MemoryObjectStore, RepositoryCatalog, type BackupRecord, type MemoryVolumeDriver } from '../src/index.js';

// BackupManager.deleteVolume over the memory volume driver and the chunked repository's catalog
// (record sections are the repository's record locks), as the other flow tests run.

/** A second "process" sharing the rig's store and volumes: its own service, catalog and manager. */
async function otherProcess(store: MemoryObjectStore, volumes: MemoryVolumeDriver) {
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0 });
  const catalog = new RepositoryCatalog(service.repository);
  return { service, catalog, manager: new BackupManager({ volumes, targets: { repo: service }, catalog }) };
}

/** Makes the service's restores fail after their first write: the volume is left `error_restoring`. */
function failRestoresPartWay(service: ChunkedBackupService): void {
  service.restore = async (_backup: BackupRecord, target) => {
    await target.write(0, Buffer.alloc(4096, 0xee));
    throw new Error('disk on fire');
  };
}

/** A volume a real restore of `backup` left error_restoring (it wrote, then failed). */
async function errorRestoring(rig: Awaited<ReturnType<typeof chunkedRig>>, backup: BackupRecord) {
  const target = await rig.volumes.createVolume({ size: backup.size, name: 'target' });
  const restore = rig.service.restore.bind(rig.service);
  failRestoresPartWay(rig.service);
  await expectCode(rig.manager.restore({ backupId: backup.id, volumeId: target.id }), 'INTERNAL');
  rig.service.restore = restore;
  expect((await rig.manager.getVolume(target.id)).status).toBe('error_restoring');
  return target;
}

describe('BackupManager.deleteVolume', () => {
  it('deletes a volume in no flow, with its checkpoints; its backups stay restorable; a second delete or an unknown volume is NOT_FOUND', async () => {
    const rig = await chunkedRig();
    const v = await filledVolume(rig.volumes, 2 * MiB);
    const backup = await rig.manager.backup({ volumeId: v.id });
    expect(backup.checkpointId).toBeDefined();
    expect((await rig.volumes.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([backup.checkpointId]);
    const before = await contents(rig.volumes, v.id);

    await rig.manager.deleteVolume(v.id);

    await expectCode(rig.volumes.getVolume(v.id), 'NOT_FOUND');
    await expectCode(rig.volumes.changedBlockTracking.listCheckpoints(v.id), 'NOT_FOUND');
    await expectCode(rig.manager.deleteVolume(v.id), 'NOT_FOUND');
    await expectCode(rig.manager.deleteVolume('no-such-volume'), 'NOT_FOUND');
    // Backups outlive their volume (as in Cinder).
    const restored = await rig.manager.restore({ backupId: backup.id, newVolume: { name: 'again' } });
    expect((await contents(rig.volumes, restored.volume.id)).equals(before)).toBe(true);
  });

  it('is BUSY while the volume is attached or has snapshots, and deletes nothing', async () => {
    const rig = await chunkedRig();
    const v = await filledVolume(rig.volumes, MiB);
    const a = await rig.volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await expectCode(rig.manager.deleteVolume(v.id), 'BUSY');
    await rig.volumes.detach(a.id);
    const snap = await rig.volumes.createSnapshot(v.id, 'kept');
    await expectCode(rig.manager.deleteVolume(v.id), 'BUSY');
    expect((await rig.manager.getVolume(v.id)).status).toBe('available');
    await rig.volumes.deleteSnapshot(snap.id);
    await rig.manager.deleteVolume(v.id);
    await expectCode(rig.volumes.getVolume(v.id), 'NOT_FOUND');
  });

  it('is CONFLICT (details volumeId, volumeStatus) while a backup or a restore works on the volume, which is left as it was', async () => {
    const rig = await chunkedRig();
    const v = await filledVolume(rig.volumes, MiB);
    const atCopy = gate();
    const backupCopy = rig.service.backup.bind(rig.service);
    rig.service.backup = async (job, source) => (await atCopy.arrive(), backupCopy(job, source));
    const running = rig.manager.backup({ volumeId: v.id });
    await atCopy.reached;
    await expect(rig.manager.deleteVolume(v.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeId: v.id, volumeStatus: 'backing-up' } });
    atCopy.release();
    const backup = await running;
    rig.service.backup = backupCopy;

    const target = await rig.volumes.createVolume({ size: backup.size, name: 'target' });
    const atWrite = gate();
    const restore = rig.service.restore.bind(rig.service);
    rig.service.restore = async (b, device, options) => (await atWrite.arrive(), restore(b, device, options));
    const restoring = rig.manager.restore({ backupId: backup.id, volumeId: target.id });
    await atWrite.reached;
    await expect(rig.manager.deleteVolume(target.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeId: target.id, volumeStatus: 'restoring-backup' } });
    atWrite.release();
    await restoring;
    expect((await contents(rig.volumes, target.id)).equals(await contents(rig.volumes, v.id))).toBe(true);
    expect((await rig.manager.getVolume(target.id)).status).toBe('available');
  });

  it('is CONFLICT for the new volume of a running restore before that restore has laid its flow state over it (waiting to attach); the restore completes', async () => {
    const rig = await chunkedRig();
    const v = await filledVolume(rig.volumes, MiB);
    const backup = await rig.manager.backup({ volumeId: v.id });
    // The restore's attach of its new volume waits: the volume exists, its flow state does not yet.
    const atAttach = gate();
    const attach = rig.volumes.attach.bind(rig.volumes);
    rig.volumes.attach = async (ref, mode) => (await atAttach.arrive(), attach(ref, mode));
    const { job, volume } = await rig.manager.startRestore({ backupId: backup.id, newVolume: { name: 'new' } });
    await atAttach.reached;
    rig.volumes.attach = attach;
    await expect(rig.manager.deleteVolume(volume.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeId: volume.id, volumeStatus: 'restoring-backup' } });
    atAttach.release();
    await job.done;
    expect((await contents(rig.volumes, volume.id)).equals(await contents(rig.volumes, v.id))).toBe(true);
    // Once restored it is an ordinary volume: deleted.
    await rig.manager.deleteVolume(volume.id);
    await expectCode(rig.volumes.getVolume(volume.id), 'NOT_FOUND');
  });

  it('deletes a volume a failed restore left error_restoring, and its flow state: nothing of it is left for later flows or recovery', async () => {
    const rig = await chunkedRig();
    const v = await filledVolume(rig.volumes, MiB);
    const backup = await rig.manager.backup({ volumeId: v.id });
    const target = await errorRestoring(rig, backup);

    await rig.manager.deleteVolume(target.id);

    await expectCode(rig.volumes.getVolume(target.id), 'NOT_FOUND');
    const catalog = new RepositoryCatalog(rig.service.repository);
    expect(await catalog.getVolumeState(target.id)).toBeUndefined();
    expect(await catalog.listVolumeStates()).toEqual([]);
    expect(await rig.service.repository.locks.list()).toEqual([]);
    const report = await rig.manager.recover();
    expect(report).toMatchObject({ resetVolumes: [], errorRestoringVolumes: [], removedVolumes: [], errors: [] });
    // The backup the failed restore read is untouched: it backs up, restores and deletes as before.
    expect((await rig.manager.getBackup(backup.id)).status).toBe('available');
    const restored = await rig.manager.restore({ backupId: backup.id, newVolume: {} });
    expect((await contents(rig.volumes, restored.volume.id)).equals(await contents(rig.volumes, v.id))).toBe(true);
    await rig.manager.backup({ volumeId: v.id, incremental: true });
  });

  it('refuses with CONFLICT, deleting nothing, an error_restoring volume that another process restored over before the delete took its section', async () => {
    const a = await chunkedRig();
    const v = await filledVolume(a.volumes, MiB);
    const backup = await a.manager.backup({ volumeId: v.id });
    const target = await errorRestoring(a, backup);
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    // The delete has read the state (error_restoring, naming `backup`); before it enters that
    // backup's section, process B restores the volume completely (its state replaced, then cleared).
    const shared = new RepositoryCatalog(a.service.repository);
    let restoredMeanwhile = false;
    const catalogA = over(shared, {
      section: async (id, fn, signal) => {
        if (id === backup.id && !restoredMeanwhile) {
          restoredMeanwhile = true;
          await b.manager.restore({ backupId: backup.id, volumeId: target.id });
        }
        return shared.section(id, fn, signal);
      },
    });
    const deleter = new BackupManager({ volumes: a.volumes, targets: { repo: a.service }, catalog: catalogA });

    await expect(deleter.deleteVolume(target.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeId: target.id } });

    expect(restoredMeanwhile).toBe(true);
    expect((await a.manager.getVolume(target.id)).status).toBe('available');
    expect((await contents(a.volumes, target.id)).equals(await contents(a.volumes, v.id))).toBe(true);
    expect(await shared.getVolumeState(target.id)).toBeUndefined();
  });

  it('of a delete and a restore over one error_restoring volume from two processes at once, one goes on and the other is refused; nothing is half done', async () => {
    const a = await chunkedRig();
    const v = await filledVolume(a.volumes, MiB);
    const backup = await a.manager.backup({ volumeId: v.id });
    const target = await errorRestoring(a, backup);
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    const outcome = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => String(e.code));
    const [deleted, restored] = await Promise.all([outcome(a.manager.deleteVolume(target.id)), outcome(b.manager.restore({ backupId: backup.id, volumeId: target.id }))]);
    const state = await b.catalog.getVolumeState(target.id);
    if (deleted === 'ok') {
      // The delete took the section first: the restore is refused (the volume gone or taken).
      expect(['CONFLICT', 'NOT_FOUND']).toContain(restored);
      await expectCode(a.volumes.getVolume(target.id), 'NOT_FOUND');
      expect(state).toBeUndefined();
    } else {
      // The restore attached the volume (the driver refuses the delete: BUSY) or took it over
      // first (CONFLICT): it completed, and the volume holds the backup.
      expect(['BUSY', 'CONFLICT']).toContain(deleted);
      expect(restored).toBe('ok');
      expect(state).toBeUndefined();
      expect((await contents(a.volumes, target.id)).equals(await contents(a.volumes, v.id))).toBe(true);
    }
    expect((await a.manager.getBackup(backup.id)).status).toBe('available');
    expect(await a.service.repository.locks.list()).toEqual([]);
  });

  it('a delete of an error_restoring volume cancelled while another process holds the section its state names is CANCELLED, and deletes nothing', async () => {
    const a = await chunkedRig();
    const v = await filledVolume(a.volumes, MiB);
    const backup = await a.manager.backup({ volumeId: v.id });
    const target = await errorRestoring(a, backup);
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    const inside = gate();
    const held = b.catalog.section(backup.id, () => inside.arrive());
    await inside.reached;
    const controller = new AbortController();
    const deleting = a.manager.deleteVolume(target.id, { signal: controller.signal });
    controller.abort();
    await expectCode(deleting, 'CANCELLED');
    inside.release();
    await held;
    expect((await a.manager.getVolume(target.id)).status).toBe('error_restoring');
  });
  it('recover() deletes the flow state of an error_restoring volume the driver deleted directly (or a delete that died before clearing it): clearedStates', async () => {
    const rig = await chunkedRig();
    const v = await filledVolume(rig.volumes, MiB);
    const backup = await rig.manager.backup({ volumeId: v.id });
    const target = await errorRestoring(rig, backup);
    const kept = await errorRestoring(rig, backup);
    // Past the manager: the flow state stays behind, naming a volume that is gone.
    await rig.volumes.deleteVolume(target.id);
    const catalog = new RepositoryCatalog(rig.service.repository);
    expect((await catalog.getVolumeState(target.id))?.status).toBe('error_restoring');

    const report = await rig.manager.recover();

    expect(report.clearedStates).toEqual([target.id]);
    expect(report.errors).toEqual([]);
    expect(await catalog.getVolumeState(target.id)).toBeUndefined();
    // A volume still there keeps its state: its content is still neither the old nor the backup's.
    expect((await rig.manager.getVolume(kept.id)).status).toBe('error_restoring');
    expect((await rig.manager.recover()).clearedStates).toEqual([]);
  });
});
