import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { MiB, expectCode, filledVolume, gate, over } from './helpers.js';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type ProcessOwner } from '../src/index.js';
import type { BackupReader } from '../src/contracts/records.js';

/**
 * The new volume of a restore is `restoring-backup` from its creation, as Cinder's is, also before
 * the job has laid its flow state over it (while it waits for the volume's lock or its attach):
 * getVolume never shows it `available` while it holds no backup yet. Once the restore that created
 * it can no longer run (its process died before the flow state), it is shown `error_restoring`,
 * as recovery settles it (it deletes the volume).
 */

async function setup() {
  const volumes = new MemoryVolumeDriver();
  const service = new MemoryBackupService('mem');
  const shared = new MemoryCatalog();
  const manager = new BackupManager({ volumes, targets: { mem: service }, catalog: shared });
  const src = await filledVolume(volumes, MiB, 1);
  const backup = await manager.backup({ volumeId: src.id });
  return { volumes, service, shared, manager, src, backup };
}

/** A pid no process has here (above the kernel's pid limit). */
const gone: ProcessOwner = { host: hostname(), pid: 2 ** 22 + 4321 };
const asGone = (r: BackupReader): BackupReader => ({ ...r, owner: gone });

describe('the new volume of a restore, before its job lays a flow state over it', () => {
  it('is shown restoring-backup while the job waits for its attach, and available once restored', async () => {
    const { volumes, shared, manager, backup } = await setup();
    const g = gate();
    const attach = volumes.attach.bind(volumes);
    volumes.attach = async (...args) => {
      if (args[1] === 'rw') await g.arrive();
      return attach(...args);
    };
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
    const { volumes, shared, manager, src, backup } = await setup();
    // A process that dies at its job's attach: what it wrote names a process that is gone, and
    // nothing it would write after (its cleanup) reaches the catalog or the driver.
    let dead = false;
    const catalog = over(shared, {
      putBackup: async (r, o) => {
        if (dead) return;
        const mine = r.owner?.pid === process.pid;
        await shared.putBackup({ ...r, ...(mine ? { owner: gone } : {}), ...(r.readers ? { readers: r.readers.map(asGone) } : {}) }, o);
      },
      putVolumeState: async (s, o) => (dead ? undefined : shared.putVolumeState(s, o)),
      clearVolumeState: async (id) => (dead ? undefined : shared.clearVolumeState(id)),
      putNewVolumeIntent: async (i, o) => (dead ? undefined : shared.putNewVolumeIntent(i.reader ? { ...i, reader: asGone(i.reader) } : i, o)),
      deleteNewVolumeIntent: async (id) => (dead ? undefined : shared.deleteNewVolumeIntent(id)),
    });
    const dying = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
      attach: async () => {
        dead = true;
        throw new Error('killed');
      },
      deleteVolume: async (id: string) => (dead ? undefined : volumes.deleteVolume(id)),
    });
    const other = new BackupManager({ volumes: dying, targets: { mem: new MemoryBackupService('mem') }, catalog });
    const { job, volume } = await other.startRestore({ backupId: backup.id, newVolume: {} });
    await job.done.catch(() => {});
    expect(dead).toBe(true);
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
    const { volumes, shared, manager, src, backup } = await setup();
    // The first restore's process dies at its attach, as in the test above.
    let dead = false;
    const catalog = over(shared, {
      putBackup: async (r, o) => {
        if (dead) return;
        const mine = r.owner?.pid === process.pid;
        await shared.putBackup({ ...r, ...(mine ? { owner: gone } : {}), ...(r.readers ? { readers: r.readers.map(asGone) } : {}) }, o);
      },
      putVolumeState: async (s, o) => (dead ? undefined : shared.putVolumeState(s, o)),
      clearVolumeState: async (id) => (dead ? undefined : shared.clearVolumeState(id)),
      putNewVolumeIntent: async (i, o) => (dead ? undefined : shared.putNewVolumeIntent(i.reader ? { ...i, reader: asGone(i.reader) } : i, o)),
      deleteNewVolumeIntent: async (id) => (dead ? undefined : shared.deleteNewVolumeIntent(id)),
    });
    const dying = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
      attach: async () => {
        dead = true;
        throw new Error('killed');
      },
      deleteVolume: async (id: string) => (dead ? undefined : volumes.deleteVolume(id)),
    });
    const other = new BackupManager({ volumes: dying, targets: { mem: new MemoryBackupService('mem') }, catalog });
    const left = await other.startRestore({ backupId: backup.id, newVolume: {} });
    await left.job.done.catch(() => {});
    expect(dead).toBe(true);
    // A second restore of the same backup, in this (live) process, waits at its attach: the
    // backup stays `restoring`, read by a reader that is alive.
    const g = gate();
    const attach = volumes.attach.bind(volumes);
    volumes.attach = async (...args) => {
      if (args[1] === 'rw') await g.arrive();
      return attach(...args);
    };
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
