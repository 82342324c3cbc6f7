import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { MiB, filledVolume, rig } from './helpers.js';
import type { BackupJob, BackupSource } from '../src/index.js';

/**
 * A backup that ends prunes the volume's checkpoints. Those of backups still being created by a
 * live owner (another process, sharing the catalog) are kept: their record names them.
 */
describe('pruning checkpoints next to a backup running elsewhere', () => {
  it('keeps the checkpoint of a creating record whose owner is alive, deletes that of a dead owner', async () => {
    const { volumes, catalog, manager } = rig();
    const cbt = volumes.changedBlockTracking;
    const v = await filledVolume(volumes, 2 * MiB);
    const base = await manager.backup({ volumeId: v.id });
    const elsewhere = await cbt.createCheckpoint(v.id);
    const dead = await cbt.createCheckpoint(v.id);
    const now = new Date().toISOString();
    const creating = { ...base, status: 'creating' as const, checkpointId: undefined, createdAt: now, updatedAt: now };
    // Another process's backup of the volume, still copying: the test runner's parent is alive.
    await catalog.putBackup({ ...creating, id: 'running-elsewhere', owner: { host: hostname(), pid: process.ppid }, checkpointId: elsewhere.id });
    await catalog.putBackup({ ...creating, id: 'died', owner: { host: hostname(), pid: 2 ** 22 + 4321 }, checkpointId: dead.id });
    const b = await manager.backup({ volumeId: v.id });
    const left = (await cbt.listCheckpoints(v.id)).map((c) => c.id);
    expect(left).toContain(elsewhere.id);
    expect(left).toContain(b.checkpointId);
    expect(left).not.toContain(dead.id);
    expect(left).not.toContain(base.checkpointId);
  });

  it('a running backup names its checkpoint in its record, so that other processes keep it', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, 2 * MiB);
    let copying!: () => void;
    let proceed!: () => void;
    const reached = new Promise<void>((r) => (copying = r));
    const go = new Promise<void>((r) => (proceed = r));
    const backup = service.backup.bind(service);
    service.backup = async (job: BackupJob, source: BackupSource) => {
      copying();
      await go;
      return backup(job, source);
    };
    const job = await manager.startBackup({ volumeId: v.id });
    await reached;
    const [checkpoint] = await volumes.changedBlockTracking.listCheckpoints(v.id);
    expect(await manager.getBackup(job.backupId)).toMatchObject({ status: 'creating', checkpointId: checkpoint!.id });
    proceed();
    expect(await job.done).toMatchObject({ status: 'available', checkpointId: checkpoint!.id });
  });

  it('a backup that fails deletes its checkpoint and its error record names none', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, 2 * MiB);
    service.failAfterBytes = MiB;
    const job = await manager.startBackup({ volumeId: v.id });
    await expect(job.done).rejects.toMatchObject({ code: 'INTERNAL' });
    const record = await manager.getBackup(job.backupId);
    expect(record.status).toBe('error');
    expect(record.checkpointId).toBeUndefined();
    expect(await volumes.changedBlockTracking.listCheckpoints(v.id)).toEqual([]);
  });
});
