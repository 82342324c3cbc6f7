import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, ChunkedBackupService, MemoryCatalog, MemoryObjectStore, MemoryVolumeDriver, type Job, type Volume } from '../src/index.js';
import { FAST_KDF, MiB, ScriptedService, expectCode, filledVolume } from './helpers.js';

/**
 * BackupManagerOptions.maxDataJobs (`cairn serve --max-data-jobs`): at most that many backups and
 * restores run at once; more are accepted and wait in line, first come first served, shown by
 * `job.queued()`, as is a job waiting behind another flow of its volume. Real memory volumes and
 * services throughout.
 *
 * A backup that must stay running reads its volume at `readRate: 1` (1 byte a second): its first
 * block is granted, the next one not for hours, so it runs until cancelled.
 */

function rig(maxDataJobs?: number) {
  const volumes = new MemoryVolumeDriver();
  const service = new ScriptedService();
  const catalog = new MemoryCatalog();
  const manager = new BackupManager({ volumes, targets: { scripted: service }, catalog, maxDataJobs });
  return { volumes, service, catalog, manager };
}

/** `count` volumes of 4 MiB in `volumes`, filled from seeds 1, 2, …, made one after another in that order. */
async function seededVolumes(volumes: MemoryVolumeDriver, count: number): Promise<Volume[]> {
  const made: Volume[] = [];
  for (let seed = 1; seed <= count; seed++) made.push(await filledVolume(volumes, 4 * MiB, seed));
  return made;
}

/** Waits (up to 2000 turns of the event loop's timers) until `done()` holds; fails the test when it never does. */
async function until(done: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (await done()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`never: ${what}`);
}

/** The job holds its place and reads its volume. */
const reading = (job: Job) => until(() => job.queued!() === undefined && job.progress().bytesDone > 0, `${job.id} reads`);

/**
 * Lets the event loop turn once: a job started comes to its first wait (its volume, a place)
 * within microtasks of its start, with no I/O between, so it shows where it waits after this.
 */
const turn = () => new Promise((r) => setImmediate(r));

/** Whether `p` has settled once the event loop has turned once. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

describe('BackupManager maxDataJobs: backups and restores beyond the limit wait in line', () => {
  it('at 1: later backups and a restore wait in the order they came, their volumes in no flow, until each one before them has ended', async () => {
    const { volumes, manager } = rig(1);
    const [va, vb, vc] = await seededVolumes(volumes, 3);
    const earlier = await manager.backup({ volumeId: vc.id });
    const first = await manager.startBackup({ volumeId: va.id, readRate: 1 });
    await reading(first);
    const second = await manager.startBackup({ volumeId: vb.id, readRate: 1 });
    const { job: restore, volume: restored } = await manager.startRestore({ backupId: earlier.id, newVolume: { name: 'restored' } });
    const third = await manager.startBackup({ volumeId: vc.id });
    await turn();
    expect([first, second, restore, third].map((j) => j.queued!())).toEqual([
      undefined,
      { waitsFor: 'data-jobs', position: 1 },
      { waitsFor: 'data-jobs', position: 2 },
      { waitsFor: 'data-jobs', position: 3 },
    ]);
    // Waiting, a job is as one queued behind another flow of its volume: nothing read, the
    // backup's record `creating`, its volume in no flow.
    expect(second.progress().bytesDone).toBe(0);
    expect(await manager.getBackup(second.id)).toMatchObject({ status: 'creating' });
    expect(await manager.getVolume(vb.id)).toMatchObject({ status: 'available' });
    expect(await manager.getVolume(vc.id)).toMatchObject({ status: 'available' });
    expect(await manager.getVolume(va.id)).toMatchObject({ status: 'backing-up' });

    // The first ends: the second takes its place, the others move up.
    first.cancel();
    await expectCode(first.done, 'CANCELLED');
    await reading(second);
    expect([restore, third].map((j) => j.queued!())).toEqual([
      { waitsFor: 'data-jobs', position: 1 },
      { waitsFor: 'data-jobs', position: 2 },
    ]);
    expect(await manager.getVolume(vb.id)).toMatchObject({ status: 'backing-up' });
    expect(third.progress().bytesDone).toBe(0);

    // The second ends: the restore runs and completes, then the third.
    second.cancel();
    await expectCode(second.done, 'CANCELLED');
    expect(await restore.done).toMatchObject({ id: earlier.id });
    expect(await manager.getVolume(restored.id)).toMatchObject({ status: 'available' });
    expect(await third.done).toMatchObject({ status: 'available', size: 4 * MiB });
    expect([first, second, restore, third].map((j) => j.queued!())).toEqual([undefined, undefined, undefined, undefined]);
  });

  it('a newcomer goes behind the line, even when it comes just as a place is freed', async () => {
    const { volumes, manager } = rig(1);
    const [va, vb, vc] = await seededVolumes(volumes, 3);
    const first = await manager.startBackup({ volumeId: va.id, readRate: 1 });
    await reading(first);
    const second = await manager.startBackup({ volumeId: vb.id, readRate: 1 });
    // Cancelled and, at once, a newcomer: the place goes to the one that waited.
    first.cancel();
    const third = await manager.startBackup({ volumeId: vc.id, readRate: 1 });
    await expectCode(first.done, 'CANCELLED');
    await turn();
    await reading(second);
    expect(third.queued!()).toEqual({ waitsFor: 'data-jobs', position: 1 });
    second.cancel();
    await expectCode(second.done, 'CANCELLED');
    await reading(third);
    third.cancel();
    await expectCode(third.done, 'CANCELLED');
  });

  it('a waiting backup or restore cancelled ends CANCELLED at once having touched nothing; the running one runs on and the line moves up', async () => {
    const { volumes, service, manager } = rig(1);
    const [va, vb] = await seededVolumes(volumes, 2);
    const earlier = await manager.backup({ volumeId: vb.id });
    const first = await manager.startBackup({ volumeId: va.id, readRate: 1 });
    await reading(first);
    const waiting = await manager.startBackup({ volumeId: vb.id });
    const { job: restore, volume: restored } = await manager.startRestore({ backupId: earlier.id, newVolume: { name: 'restored' } });
    await turn();
    expect(waiting.queued!()).toEqual({ waitsFor: 'data-jobs', position: 1 });
    expect(restore.queued!()).toEqual({ waitsFor: 'data-jobs', position: 2 });
    expect(await manager.getBackup(earlier.id)).toMatchObject({ status: 'restoring' });

    waiting.cancel('no longer wanted');
    await expect(waiting.done).rejects.toMatchObject({ code: 'CANCELLED', message: 'no longer wanted' });
    expect(waiting.progress().bytesDone).toBe(0);
    // The record ends `error` with no data stored for it; its volume never entered a flow, and
    // no snapshot was taken of it.
    const record = await manager.getBackup(waiting.id);
    expect(record).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^CANCELLED/) });
    expect(record.checkpointId).toBeUndefined();
    await expectCode(service.assertStored(record), 'NOT_FOUND');
    expect(await manager.getVolume(vb.id)).toMatchObject({ status: 'available' });
    expect(await volumes.listSnapshots(vb.id)).toEqual([]);
    expect(restore.queued!()).toEqual({ waitsFor: 'data-jobs', position: 1 });

    // The restore, cancelled while it waits: its new volume goes, its backup is available again.
    restore.cancel();
    await expectCode(restore.done, 'CANCELLED');
    await expectCode(volumes.getVolume(restored.id), 'NOT_FOUND');
    expect(await manager.getBackup(earlier.id)).toMatchObject({ status: 'available' });

    // The running one was left alone, and holds the only place still.
    expect(await settled(first.done)).toBe(false);
    expect(first.queued!()).toBeUndefined();
    expect(await manager.getVolume(va.id)).toMatchObject({ status: 'backing-up' });
    first.cancel();
    await expectCode(first.done, 'CANCELLED');
    expect(await manager.backup({ volumeId: vb.id })).toMatchObject({ status: 'available' });
  });

  it('a job behind another flow of its volume shows its place in the volume\'s line, the lock\'s before the turns\'; holding the volume, it waits for a place', async () => {
    const { volumes, manager } = rig(1);
    const [va, vb, vc] = await seededVolumes(volumes, 3);
    const earlier = await manager.backup({ volumeId: va.id });
    const running = await manager.startBackup({ volumeId: vb.id, readRate: 1 });
    await reading(running);
    // The first backup of va holds its volume and waits for a place: va is in no flow yet, so
    // more backups of it, and a restore over it, are accepted and wait for the volume.
    const first = await manager.startBackup({ volumeId: va.id, readRate: 1 });
    const other = await manager.startBackup({ volumeId: vc.id });
    const second = await manager.startBackup({ volumeId: va.id, incremental: true });
    const third = await manager.startBackup({ volumeId: va.id });
    const { job: restore } = await manager.startRestore({ backupId: earlier.id, volumeId: va.id });
    await turn();
    // The second waits for the lock (its turn came once the first held it); the third for its
    // turn, which comes once the second holds the lock: the restore, waiting for the lock, is ahead of it.
    expect([first, other, second, restore, third].map((j) => j.queued!())).toEqual([
      { waitsFor: 'data-jobs', position: 1 },
      { waitsFor: 'data-jobs', position: 2 },
      { waitsFor: 'volume', position: 1 },
      { waitsFor: 'volume', position: 2 },
      { waitsFor: 'volume', position: 3 },
    ]);
    expect(await manager.getVolume(va.id)).toMatchObject({ status: 'available' });

    running.cancel();
    await expectCode(running.done, 'CANCELLED');
    await reading(first);
    expect([other, second, restore, third].map((j) => j.queued!())).toEqual([
      { waitsFor: 'data-jobs', position: 1 },
      { waitsFor: 'volume', position: 1 },
      { waitsFor: 'volume', position: 2 },
      { waitsFor: 'volume', position: 3 },
    ]);

    // The first ends: the other volume's backup takes the place; the second holds va and waits for a place.
    first.cancel();
    await expectCode(first.done, 'CANCELLED');
    await until(() => second.queued!()?.waitsFor === 'data-jobs', 'the second waits for a place');
    expect([second, restore, third].map((j) => j.queued!())).toEqual([
      { waitsFor: 'data-jobs', position: 1 },
      { waitsFor: 'volume', position: 1 },
      { waitsFor: 'volume', position: 2 },
    ]);
    expect(await other.done).toMatchObject({ status: 'available' });
    // Then in that order: the incremental (on `earlier`, the first having failed), the restore, the full backup.
    expect(await second.done).toMatchObject({ status: 'available', incremental: true, parentId: earlier.id });
    await restore.done;
    expect(await third.done).toMatchObject({ status: 'available', incremental: false });
    const done = await manager.listBackups({ volumeId: va.id, status: 'available' });
    expect(done.map((b) => b.id)).toEqual([earlier.id, second.id, third.id]);
    expect([second, restore, third].map((j) => j.queued!())).toEqual([undefined, undefined, undefined]);
  });

  it('a server\'s shutdown (the signal every job was started with) ends the running job and the waiting ones CANCELLED: records error, volumes in no flow, no place kept', async () => {
    const { volumes, manager } = rig(1);
    const [va, vb, vc] = await seededVolumes(volumes, 3);
    const earlier = await manager.backup({ volumeId: vc.id });
    const server = new AbortController();
    const signal = server.signal;
    const first = await manager.startBackup({ volumeId: va.id, readRate: 1, signal });
    await reading(first);
    const waiting = await manager.startBackup({ volumeId: vb.id, signal });
    const behind = await manager.startBackup({ volumeId: vb.id, signal });
    const { job: restore, volume: restored } = await manager.startRestore({ backupId: earlier.id, newVolume: {}, signal });
    await turn();
    expect([waiting, behind, restore].map((j) => j.queued!())).toEqual([
      { waitsFor: 'data-jobs', position: 1 },
      { waitsFor: 'volume', position: 1 },
      { waitsFor: 'data-jobs', position: 2 },
    ]);

    server.abort(new CairnError('CANCELLED', 'the server is shutting down'));
    for (const job of [first, waiting, behind, restore]) await expect(job.done, job.id).rejects.toMatchObject({ code: 'CANCELLED' });
    for (const job of [first, waiting, behind]) expect(await manager.getBackup(job.id), job.id).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^CANCELLED/) });
    for (const v of [va, vb]) expect(await manager.getVolume(v.id), v.id).toMatchObject({ status: 'available' });
    await expectCode(volumes.getVolume(restored.id), 'NOT_FOUND');
    expect(await manager.getBackup(earlier.id)).toMatchObject({ status: 'available' });
    expect(manager.listJobs()).toEqual([]);
    // No place is kept by the jobs that ended: a new backup runs at once.
    const next = await manager.startBackup({ volumeId: vb.id });
    await turn();
    expect(next.queued!()).toBeUndefined();
    expect(await next.done).toMatchObject({ status: 'available' });
  });

  it('verify, gc and readBackup take no place: they run while backups wait', async () => {
    const volumes = new MemoryVolumeDriver();
    const scripted = new ScriptedService();
    const repo = await ChunkedBackupService.open(new MemoryObjectStore('mem'), { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: MiB, kdf: FAST_KDF } });
    const manager = new BackupManager({ volumes, targets: { scripted, repo }, catalog: new MemoryCatalog(), maxDataJobs: 1 });
    try {
      const [va, vb] = await seededVolumes(volumes, 2);
      const earlier = await manager.backup({ volumeId: vb.id, target: 'repo' });
      const first = await manager.startBackup({ volumeId: va.id, readRate: 1 });
      await reading(first);
      const waiting = await manager.startBackup({ volumeId: vb.id });
      await turn();
      expect(waiting.queued!()).toEqual({ waitsFor: 'data-jobs', position: 1 });

      expect(await manager.verify(earlier.id)).toMatchObject({ problems: [] });
      expect(await manager.verify()).toMatchObject({ problems: [] });
      expect(await repo.gc({ dryRun: true })).toBeDefined();
      expect(await manager.readBackup(earlier.id, async (b) => b.id)).toBe(earlier.id);
      expect(waiting.queued!()).toEqual({ waitsFor: 'data-jobs', position: 1 });

      first.cancel();
      await expectCode(first.done, 'CANCELLED');
      expect(await waiting.done).toMatchObject({ status: 'available' });
    } finally {
      await repo.close?.();
    }
  });

  it('0 or none is no limit: every backup runs at once; anything but a whole number is INVALID_INPUT', async () => {
    for (const limit of [0, undefined]) {
      const { volumes, manager } = rig(limit);
      const jobs = [];
      for (let seed = 1; seed <= 6; seed++) jobs.push(await manager.startBackup({ volumeId: (await filledVolume(volumes, 2 * MiB, seed)).id, readRate: 1 }));
      for (const job of jobs) await reading(job);
      for (const job of jobs) expect(job.queued!(), String(limit)).toBeUndefined();
      for (const job of jobs) job.cancel();
      for (const job of jobs) await expectCode(job.done, 'CANCELLED');
    }
    const { volumes, catalog, service } = rig();
    for (const bad of [-1, 1.5, Number.NaN, Infinity, '2' as unknown as number]) {
      expect(() => new BackupManager({ volumes, targets: { scripted: service }, catalog, maxDataJobs: bad }), String(bad)).toThrow(
        expect.objectContaining({ code: 'INVALID_INPUT', details: { field: 'maxDataJobs' } }),
      );
    }
  });
});
