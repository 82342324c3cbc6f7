import { describe, expect, it } from 'vitest';
import { MiB, chunkedRig, contents, expectCode, filledVolume, rig } from './helpers.js';
import { RepositoryCatalog, type RestoreOptions } from '../src/index.js';

/**
 * A restore into an existing volume that fails before its service has written anything leaves
 * the volume as it was: its data intact, so not `error_restoring` (which would refuse its backups
 * until it is restored again or deleted). Once the service has begun writing, a failure leaves it
 * `error_restoring` (restore-commit.test.ts, restore-cancel.test.ts).
 */
describe('a restore into an existing volume that fails before writing', () => {
  it('from a chunked repository whose backup data is gone: NOT_FOUND, the volume available with its data, and it backs up', async () => {
    const { service, volumes, manager } = await chunkedRig();
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    // The data goes behind the manager's back (the record stays available).
    await service.delete(await manager.getBackup(b.id));
    await expectCode(manager.restore({ backupId: b.id, volumeId: dst.id }), 'NOT_FOUND');
    const view = await manager.getVolume(dst.id);
    expect(view.status).toBe('available');
    expect(view.previousStatus).toBeUndefined();
    expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect((await manager.backup({ volumeId: dst.id })).status).toBe('available');
  });

  it('cancelled while the service has not written yet: CANCELLED, the volume available with its data', async () => {
    const { volumes, service, catalog, manager } = rig();
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    let started!: () => void;
    const reached = new Promise<void>((r) => (started = r));
    const restore = service.restore.bind(service);
    // A service that waits (reading its index, say) before its first write.
    service.restore = async (backup, target, options?: RestoreOptions) => {
      started();
      await new Promise<void>((resolve) => options!.signal!.addEventListener('abort', () => resolve(), { once: true }));
      return restore(backup, target, options);
    };
    const { job } = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    await reached;
    job.cancel();
    await expectCode(job.done, 'CANCELLED');
    expect(await catalog.getVolumeState(dst.id)).toBeUndefined();
    expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });

  it('over a volume already error_restoring: the state it had is kept as it was', async () => {
    const { service, volumes, manager } = await chunkedRig();
    const catalog = new RepositoryCatalog(service.repository);
    const src = await filledVolume(volumes, MiB, 1);
    const good = await manager.backup({ volumeId: src.id });
    const gone = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    // What a restore of `good` that failed part-way leaves.
    const left = { volumeId: dst.id, status: 'error_restoring' as const, previousStatus: 'available', backupId: good.id, since: new Date(Date.now() - 1000).toISOString() };
    await catalog.putVolumeState(left);
    await service.delete(await manager.getBackup(gone.id));
    await expectCode(manager.restore({ backupId: gone.id, volumeId: dst.id }), 'NOT_FOUND');
    expect(await catalog.getVolumeState(dst.id)).toEqual(left);
    await expectCode(manager.backup({ volumeId: dst.id }), 'CONFLICT');
    // The way out is unchanged: a restore that completes clears it.
    await manager.restore({ backupId: good.id, volumeId: dst.id });
    expect(await catalog.getVolumeState(dst.id)).toBeUndefined();
    expect((await contents(volumes, dst.id)).equals(await contents(volumes, src.id))).toBe(true);
  });

  it('once the service has written, a failure still leaves the volume error_restoring', async () => {
    const { volumes, service, manager } = rig();
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    service.restore = async (_backup, target) => {
      await target.write(0, Buffer.alloc(4096, 0xee));
      throw new Error('backend exploded mid-restore');
    };
    await expectCode(manager.restore({ backupId: b.id, volumeId: dst.id }), 'INTERNAL');
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
  });
});
