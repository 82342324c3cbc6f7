import { hostname } from 'node:os';
import { describe, expect, it, vi } from 'vitest';
import { MiB, filledVolume, gate, rig } from './helpers.js';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type BackupJob, type BackupSource } from '../src/index.js';

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

  it("an incremental deletes its parent's checkpoint without reading the volume's records, however many there are", async () => {
    const { volumes, catalog, manager } = rig();
    const v = await filledVolume(volumes, 2 * MiB);
    let parent = await manager.backup({ volumeId: v.id });
    for (let i = 0; i < 3; i++) parent = await manager.backup({ volumeId: v.id, incremental: true });
    const listed = vi.spyOn(catalog, 'listBackups');
    const b = await manager.backup({ volumeId: v.id, incremental: true });
    expect(b.parentId).toBe(parent.id);
    // Every record of the volume, as pruning read them (the memory catalog answers latestBackup,
    // which the backup's start asks with a status, through listBackups too).
    expect(listed.mock.calls.filter(([filter]) => filter?.status === undefined)).toEqual([]);
    expect((await volumes.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([b.checkpointId]);
  });

  it("keeps the parent's checkpoint when the parent sorts after the new backup (it stays the newest available)", async () => {
    const { volumes, catalog, manager } = rig();
    const v = await filledVolume(volumes, 2 * MiB);
    const base = await manager.backup({ volumeId: v.id });
    // As when a backup requested later ran first (another process took the volume while this
    // one's request waited): the parent's record is the newer of the two.
    const later = new Date(Date.now() + 3_600_000).toISOString();
    await catalog.putBackup({ ...(await catalog.getBackup(base.id)), createdAt: later });
    const b = await manager.backup({ volumeId: v.id, incremental: true });
    expect(b.parentId).toBe(base.id);
    expect((await manager.listBackups({ volumeId: v.id })).at(-1)!.id).toBe(base.id);
    const left = (await volumes.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id);
    expect(left).toContain(base.checkpointId);
    expect(left).toContain(b.checkpointId);
  });
});

describe('pruning with two targets', () => {
  it("keeps the checkpoint of a target's newest backup while it is being restored", async () => {
    const volumes = new MemoryVolumeDriver();
    const a = new MemoryBackupService('a');
    const b = new MemoryBackupService('b');
    const manager = new BackupManager({ volumes, targets: { a, b }, catalog: new MemoryCatalog() });
    const cbt = volumes.changedBlockTracking;
    const v = await filledVolume(volumes, 2 * MiB);
    const inA = await manager.backup({ volumeId: v.id, target: 'a' });
    // A restore of A's newest backup runs (to another volume) while a backup to B ends.
    const restoring = gate();
    const restore = a.restore.bind(a);
    a.restore = async (...args) => {
      await restoring.arrive();
      return restore(...args);
    };
    const { job } = await manager.startRestore({ backupId: inA.id, newVolume: {} });
    await restoring.reached;
    expect((await manager.getBackup(inA.id)).status).toBe('restoring');
    const inB = await manager.backup({ volumeId: v.id, target: 'b' });
    const left = (await cbt.listCheckpoints(v.id)).map((c) => c.id);
    expect(left).toContain(inB.checkpointId);
    expect(left).toContain(inA.checkpointId);
    restoring.release();
    await job.done;
    // A's next incremental reads only what changed since A's newest backup.
    const next = await manager.backup({ volumeId: v.id, target: 'a', incremental: true });
    expect(next.parentId).toBe(inA.id);
    expect(next.stats!.bytesRead).toBe(0);
  });
});
