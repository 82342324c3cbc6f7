import { describe, expect, it } from 'vitest';
import { MiB, contents, expectCode } from './helpers.js';
import type { MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, RestoreRequest } from '../src/index.js';
import { backedUpRig, dyingProcess } from './restore-rig.js';

/**
 * The volume of a restore whose process died (its reader gone: BackupRecord.readers) is judged as
 * recovery settles it, `error_restoring` (Cinder marks the volume of a restore that died so),
 * by the next flow on it and by a look at it, without waiting for a recovery to run: it is shown
 * `error_restoring`, it can be deleted, and an existing one restored again.
 */

/**
 * Runs a restore as a process does until it dies once it has written part of the volume (see
 * dyingProcess). Its attachments go with it. Resolves with the restored volume's id.
 */
async function restoreThatDied(shared: MemoryCatalog, volumes: MemoryVolumeDriver, service: MemoryBackupService, request: RestoreRequest): Promise<string> {
  const p = dyingProcess(shared, volumes);
  const attached: string[] = [];
  const dyingService = Object.assign(Object.create(service) as MemoryBackupService, {
    restore: async (...args: Parameters<MemoryBackupService['restore']>) => {
      await args[1].write(0, Buffer.alloc(4096, 9));
      p.die();
    },
  });
  const manager = p.manager(
    {
      attach: async (...args: Parameters<MemoryVolumeDriver['attach']>) => {
        const a = await volumes.attach(...args);
        attached.push(a.id);
        return a;
      },
    },
    dyingService,
  );
  const { job, volume } = await manager.startRestore(request);
  await job.done.catch(() => {});
  for (const id of attached) await volumes.detach(id);
  return volume.id;
}

describe('the volume of a restore whose process died, before any recovery', () => {
  it('a new one is shown error_restoring and can be deleted; recovery then settles the rest', async () => {
    const { volumes, service, shared, manager, src, backup } = await backedUpRig();
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
    const { volumes, service, shared, manager, src, backup } = await backedUpRig();
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
