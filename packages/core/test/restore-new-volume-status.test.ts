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
    await expectCode(manager.backup({ volumeId: volume.id }), 'CONFLICT');
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
    await expectCode(manager.backup({ volumeId: volume.id }), 'CONFLICT');
    expect(await manager.recover()).toMatchObject({ removedVolumes: [volume.id], errors: [] });
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
  });
});
