import { describe, expect, it } from 'vitest';
import { contents, gate, over } from './helpers.js';
import { asGone, backedUpRig, gone } from './restore-rig.js';
import { BackupManager, ownerMayBeAlive, type BackupRecord } from '../src/index.js';
import { recoverInFlight } from '../src/flow/recovery.js';

/**
 * A restore to a new volume whose process dies after the volume holds the whole backup, but
 * before the job is done (its last steps: the volume's flow state cleared, the claim released,
 * the intent deleted). The caller was not told of the volume, so a recovery deletes it, and the
 * caller's retry leaves exactly one volume of that name; a recovery while the job is still at
 * those steps deletes nothing.
 */

/** The last steps of a restore to a new volume, where its process stops for good. */
type Point = 'clear-state' | 'release' | 'delete-intent';

async function dieAt(point: Point) {
  const { volumes, service, shared, src, backup: b } = await backedUpRig();
  const never = new Promise<never>(() => {});
  let died!: () => void;
  const dead = new Promise<void>((r) => (died = r));
  const stop = (): Promise<never> => {
    died();
    return never;
  };
  // The dying process's catalog: what it writes names a process that is gone (its records' owner
  // and readers, the reader its state and intent name), and at `point` it stops (the call never
  // returns). Its sections exclude no one else: a process that dies lets go of its locks.
  const catalog = over(shared, {
    section: async (_backupId, fn) => fn(),
    putBackup: async (r: BackupRecord, o) => {
      // The release's write: the record leaves `restoring`.
      if (point === 'release' && r.status !== 'restoring') return stop();
      return shared.putBackup({ ...r, ...(r.owner ? { owner: gone } : {}), ...(r.readers ? { readers: r.readers.map(asGone) } : {}) }, o);
    },
    putVolumeState: async (s, o) => shared.putVolumeState(s.reader ? { ...s, reader: asGone(s.reader) } : s, o),
    putNewVolumeIntent: async (i, o) => shared.putNewVolumeIntent(i.reader ? { ...i, reader: asGone(i.reader) } : i, o),
    clearVolumeState: async (id) => (point === 'clear-state' ? stop() : shared.clearVolumeState(id)),
    deleteNewVolumeIntent: async (id) => (point === 'delete-intent' ? stop() : shared.deleteNewVolumeIntent(id)),
  });
  const dying = new BackupManager({ volumes, targets: { mem: service }, catalog });
  const { volume } = await dying.startRestore({ backupId: b.id, newVolume: { name: 'r1' } });
  await dead;
  // It got as far as the copy's end: the volume holds the whole backup.
  expect((await contents(volumes, volume.id)).equals(await contents(volumes, src.id))).toBe(true);
  // A recovering process judges liveness by the owner alone, as another process would.
  const recover = () => recoverInFlight({ catalog: shared, volumes, isLive: (r) => !!r.owner && ownerMayBeAlive(r.owner) });
  return { volumes, service, shared, src, b, volume, recover };
}

describe('a process that dies at the last steps of a restore to a new volume', () => {
  for (const point of ['clear-state', 'release', 'delete-intent'] as const) {
    it(`leaves no volume behind once recovered, and the retry makes exactly one, when it dies at ${point}`, async () => {
      const { volumes, service, shared, src, b, volume, recover } = await dieAt(point);
      const report = await recover();
      expect(report.removedVolumes).toEqual([volume.id]);
      expect(report.errors).toEqual([]);
      expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
      expect(await shared.listVolumeStates()).toEqual([]);
      expect(await shared.listNewVolumeIntents()).toEqual([]);
      expect((await shared.getBackup(b.id)).status).toBe('available');
      expect(await recover()).toMatchObject({ removedVolumes: [], errors: [], errorRestoringVolumes: [] });
      // The caller's retry, in a new process.
      const manager = new BackupManager({ volumes, targets: { mem: service }, catalog: shared });
      const { job, volume: again } = await manager.startRestore({ backupId: b.id, newVolume: { name: 'r1' } });
      await job.done;
      expect((await manager.listVolumes()).filter((v) => v.name === 'r1').map((v) => [v.id, v.status])).toEqual([[again.id, 'available']]);
      expect(await manager.recover()).toMatchObject({ removedVolumes: [], errors: [], errorRestoringVolumes: [] });
      expect((await contents(volumes, again.id)).equals(await contents(volumes, src.id))).toBe(true);
    });
  }
});

describe('a recovery while a restore to a new volume is at its last step', () => {
  it('deletes nothing between the claim’s release and the intent’s delete: the job is still alive', async () => {
    const { volumes, service, shared, src, backup: b } = await backedUpRig();
    const last = gate();
    const catalog = over(shared, {
      deleteNewVolumeIntent: async (id) => {
        await last.arrive();
        return shared.deleteNewVolumeIntent(id);
      },
    });
    const manager = new BackupManager({ volumes, targets: { mem: service }, catalog });
    const { job, volume } = await manager.startRestore({ backupId: b.id, newVolume: { name: 'r1' } });
    await last.reached;
    // The record has left `restoring`, the intent is still there: the restore's reader is alive.
    expect((await shared.getBackup(b.id)).status).toBe('available');
    expect(await shared.listNewVolumeIntents()).toHaveLength(1);
    expect(await manager.getVolume(volume.id)).toMatchObject({ status: 'restoring-backup' });
    // Another process's recovery, and this process's own.
    expect(await recoverInFlight({ catalog: shared, volumes, isLive: (r) => !!r.owner && ownerMayBeAlive(r.owner) })).toMatchObject({ removedVolumes: [], errors: [] });
    expect(await manager.recover()).toMatchObject({ removedVolumes: [], errors: [], errorRestoringVolumes: [] });
    last.release();
    await job.done;
    expect(await shared.listNewVolumeIntents()).toEqual([]);
    expect(await manager.getVolume(volume.id)).toMatchObject({ status: 'available' });
    expect(await manager.recover()).toMatchObject({ removedVolumes: [], errors: [] });
    expect((await contents(volumes, volume.id)).equals(await contents(volumes, src.id))).toBe(true);
  });
});
