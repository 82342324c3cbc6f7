import { describe, expect, it } from 'vitest';
import { MiB, contents, expectCode, filledVolume, rig } from './helpers.js';
import type { BlockDevice, Job, RestoreOptions } from '../src/index.js';

/**
 * A restore's commit point: once the service has written the whole volume and the device is
 * flushed, the restore is done, and a cancel is too late (as for a backup once its service has
 * committed it). Before that, a cancel leaves an existing volume error_restoring.
 */
describe('a cancel after a restore has written and flushed the volume', () => {
  /** A rig whose service calls `hook(target, job)` once its restore has written everything. */
  async function restoreRig(hook: (target: BlockDevice, job: Job) => void) {
    const r = rig();
    const src = await filledVolume(r.volumes, 2 * MiB, 1);
    const expected = await contents(r.volumes, src.id);
    const b = await r.manager.backup({ volumeId: src.id });
    const restore = r.service.restore.bind(r.service);
    let job: Job | undefined;
    r.service.restore = async (backup, target, options?: RestoreOptions) => {
      await restore(backup, target, options);
      hook(target, job!);
    };
    const start = async (request: { volumeId: string } | { newVolume: { name?: string } }) => {
      const started = await r.manager.startRestore({ backupId: b.id, ...request });
      job = started.job;
      return started;
    };
    return { ...r, b, expected, start };
  }

  it('is too late: the existing volume is available with the backup\'s data, and the backup available', async () => {
    const { volumes, manager, b, expected, start } = await restoreRig((_target, job) => job.cancel('too late'));
    const dst = await filledVolume(volumes, 2 * MiB, 2);
    const { job } = await start({ volumeId: dst.id });
    expect((await job.done).status).toBe('available');
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(expected)).toBe(true);
    expect((await manager.getBackup(b.id)).status).toBe('available');
    // Nothing is left error_restoring: the volume can be backed up at once.
    expect((await manager.backup({ volumeId: dst.id })).status).toBe('available');
  });

  it('is too late for a new volume too: it is kept, not deleted', async () => {
    const { volumes, manager, b, expected, start } = await restoreRig((_target, job) => job.cancel('too late'));
    const { job, volume } = await start({ newVolume: { name: 'restored' } });
    expect((await job.done).status).toBe('available');
    expect((await manager.getVolume(volume.id)).status).toBe('available');
    expect((await contents(volumes, volume.id)).equals(expected)).toBe(true);
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });

  it('arriving while the device is flushed, is too late once the flush succeeds', async () => {
    const { volumes, manager, expected, start } = await restoreRig((target, job) => {
      const flush = target.flush.bind(target);
      target.flush = async () => {
        job.cancel('during flush');
        await flush();
      };
    });
    const dst = await filledVolume(volumes, 2 * MiB, 2);
    const { job } = await start({ volumeId: dst.id });
    expect((await job.done).status).toBe('available');
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(expected)).toBe(true);
  });

  it('a flush that fails is no commit: CANCELLED when cancelled meanwhile, the volume error_restoring', async () => {
    const { volumes, manager, b, start } = await restoreRig((target, job) => {
      target.flush = async () => {
        job.cancel('during flush');
        throw new Error('flush lost');
      };
    });
    const dst = await filledVolume(volumes, 2 * MiB, 2);
    const { job } = await start({ volumeId: dst.id });
    await expectCode(job.done, 'CANCELLED');
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });

  it('a cancel while the service still writes ends CANCELLED and leaves the existing volume error_restoring', async () => {
    const { volumes, service, manager, b } = await restoreRig(() => {});
    const dst = await filledVolume(volumes, 2 * MiB, 2);
    const restore = service.restore.bind(service);
    let job!: Job;
    service.restore = async (backup, target, options) => {
      const write = target.write.bind(target);
      let n = 0;
      target.write = async (offset, data) => {
        if (++n === 2) job.cancel('mid-write');
        return write(offset, data);
      };
      return restore(backup, target, options);
    };
    job = (await manager.startRestore({ backupId: b.id, volumeId: dst.id })).job;
    await expectCode(job.done, 'CANCELLED');
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });
});
