import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { MiB, filledVolume, gate, rig } from './helpers.js';

/**
 * A backup or restore asked for a volume that a flow already holds (its state written in the
 * catalog) is refused at the request with `CONFLICT`, and the refusal says which volume and the
 * state found (`details: {volumeId, volumeStatus}`), as every other CONFLICT about a volume does.
 */
describe('CONFLICT for a volume in a flow names the volume and its state', () => {
  it('a backup and a restore asked for a volume a restore is writing', async () => {
    const { volumes, service, manager } = rig();
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const held = gate();
    const restore = service.restore.bind(service);
    service.restore = async (...args) => (await held.arrive(), restore(...args));
    const { job } = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    await held.reached;
    const expected = { code: 'CONFLICT', details: { volumeId: dst.id, volumeStatus: 'restoring-backup' } };
    await expect(manager.startBackup({ volumeId: dst.id })).rejects.toMatchObject(expected);
    await expect(manager.startRestore({ backupId: b.id, volumeId: dst.id })).rejects.toMatchObject(expected);
    held.release();
    await job.done;
    expect((await manager.getVolume(dst.id)).status).toBe('available');
  });

  it('a backup and a restore asked for a volume another process backs up (its state in the shared catalog)', async () => {
    const { volumes, catalog, manager } = rig();
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    // The other process's backup: its `creating` record, owned by a live process (the test runner's parent), and its state.
    await catalog.putBackup({ ...b, id: 'elsewhere', status: 'creating', owner: { host: hostname(), pid: process.ppid } });
    await catalog.putVolumeState({ volumeId: src.id, status: 'backing-up', previousStatus: 'available', backupId: 'elsewhere', since: new Date().toISOString() });
    const expected = { code: 'CONFLICT', details: { volumeId: src.id, volumeStatus: 'backing-up' } };
    await expect(manager.startBackup({ volumeId: src.id })).rejects.toMatchObject(expected);
    await expect(manager.startRestore({ backupId: b.id, volumeId: src.id })).rejects.toMatchObject(expected);
    expect(manager.listJobs()).toEqual([]);
  });
});
