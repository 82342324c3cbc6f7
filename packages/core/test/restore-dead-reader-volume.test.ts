import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { MiB, contents, expectCode, filledVolume, over } from './helpers.js';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type ProcessOwner, type RestoreRequest } from '../src/index.js';
import type { BackupReader } from '../src/contracts/records.js';

/**
 * The volume of a restore whose process died (its reader gone: BackupRecord.readers) is judged as
 * recovery settles it, `error_restoring` (Cinder marks the volume of a restore that died so),
 * by the next flow on it and by a look at it, without waiting for a recovery to run: it is shown
 * `error_restoring`, it can be deleted, and an existing one restored again.
 */

/** A pid no process has here (above the kernel's pid limit). */
const gone: ProcessOwner = { host: hostname(), pid: 2 ** 22 + 4321 };
const asGone = (r: BackupReader): BackupReader => ({ ...r, owner: gone });

/**
 * Runs a restore as a process does until it dies once it has written part of the volume: what it
 * wrote names a process that is gone, and nothing it would write after (its cleanup) reaches the
 * catalog or the driver. Its attachments go with it. Resolves with the restored volume's id.
 */
async function restoreThatDied(shared: MemoryCatalog, volumes: MemoryVolumeDriver, service: MemoryBackupService, request: RestoreRequest): Promise<string> {
  let dead = false;
  const catalog = over(shared, {
    putBackup: async (r, o) => {
      if (dead) return;
      const mine = r.owner?.pid === process.pid;
      await shared.putBackup({ ...r, ...(mine ? { owner: gone } : {}), ...(r.readers ? { readers: r.readers.map(asGone) } : {}) }, o);
    },
    putVolumeState: async (s, o) => (dead ? undefined : shared.putVolumeState(s.reader ? { ...s, reader: asGone(s.reader) } : s, o)),
    clearVolumeState: async (id) => (dead ? undefined : shared.clearVolumeState(id)),
    putNewVolumeIntent: async (i, o) => (dead ? undefined : shared.putNewVolumeIntent(i.reader ? { ...i, reader: asGone(i.reader) } : i, o)),
    deleteNewVolumeIntent: async (id) => (dead ? undefined : shared.deleteNewVolumeIntent(id)),
  });
  const attached: string[] = [];
  const dying = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
    attach: async (...args: Parameters<MemoryVolumeDriver['attach']>) => {
      const a = await volumes.attach(...args);
      attached.push(a.id);
      return a;
    },
    detach: async (id: string) => (dead ? undefined : volumes.detach(id)),
    deleteVolume: async (id: string) => (dead ? undefined : volumes.deleteVolume(id)),
  });
  const dyingService = Object.assign(Object.create(service) as MemoryBackupService, {
    restore: async (...args: Parameters<MemoryBackupService['restore']>) => {
      await args[1].write(0, Buffer.alloc(4096, 9));
      dead = true;
      throw new Error('killed');
    },
  });
  const manager = new BackupManager({ volumes: dying, targets: { mem: dyingService }, catalog });
  const { job, volume } = await manager.startRestore(request);
  await job.done.catch(() => {});
  for (const id of attached) await volumes.detach(id);
  return volume.id;
}

async function setup() {
  const volumes = new MemoryVolumeDriver();
  const service = new MemoryBackupService('mem');
  const shared = new MemoryCatalog();
  const manager = new BackupManager({ volumes, targets: { mem: service }, catalog: shared });
  const src = await filledVolume(volumes, MiB, 1);
  const backup = await manager.backup({ volumeId: src.id });
  return { volumes, service, shared, manager, src, backup };
}

describe('the volume of a restore whose process died, before any recovery', () => {
  it('a new one is shown error_restoring and can be deleted; recovery then settles the rest', async () => {
    const { volumes, service, shared, manager, src, backup } = await setup();
    const id = await restoreThatDied(shared, volumes, service, { backupId: backup.id, newVolume: {} });
    expect(await shared.getVolumeState(id)).toMatchObject({ status: 'restoring-backup' });

    expect(await manager.getVolume(id)).toMatchObject({ status: 'error_restoring' });
    await expectCode(manager.backup({ volumeId: id }), 'CONFLICT');
    await manager.deleteVolume(id);
    await expectCode(volumes.getVolume(id), 'NOT_FOUND');
    expect(await shared.getVolumeState(id)).toBeUndefined();

    // Recovery finds no volume of that restore left, and settles its intent and the backup.
    expect(await manager.recover()).toMatchObject({ removedVolumes: [], restoredBackups: [backup.id], errors: [] });
    expect(await shared.listNewVolumeIntents()).toEqual([]);
    expect((await manager.getBackup(backup.id)).status).toBe('available');
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
  });

  it('an existing one is shown error_restoring and restores again, byte-exact', async () => {
    const { volumes, service, shared, manager, src, backup } = await setup();
    const target = await volumes.createVolume({ size: MiB });
    await restoreThatDied(shared, volumes, service, { backupId: backup.id, volumeId: target.id });
    expect(await shared.getVolumeState(target.id)).toMatchObject({ status: 'restoring-backup' });

    expect(await manager.getVolume(target.id)).toMatchObject({ status: 'error_restoring', previousStatus: 'available' });
    await manager.restore({ backupId: backup.id, volumeId: target.id });
    expect(await manager.getVolume(target.id)).toMatchObject({ status: 'available' });
    expect((await contents(volumes, target.id)).equals(await contents(volumes, src.id))).toBe(true);
    expect(await shared.getVolumeState(target.id)).toBeUndefined();
  });
});
