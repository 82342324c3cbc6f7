import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { MiB, chunkedRig, contents, expectCode, filledVolume, gate, over, rig } from './helpers.js';
import { BackupManager, CairnError, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, RepositoryCatalog, newId, ownerMayBeAlive, type Attachment, type BackupRecord } from '../src/index.js';
import { recoverInFlight } from '../src/flow/recovery.js';
import { asGone } from './restore-rig.js';

/**
 * A restore to a new volume creates the volume, so it owns it: whatever happens (the copy fails
 * while the volume cannot be detached, the process dies at any point), the volume is deleted, by
 * the job or, when the job cannot, by a recovery, and never left behind unrecorded.
 */

const transient = () => new CairnError('UNAVAILABLE', 'detach timed out', { driver: 'memory' });

/** A rig whose service writes part of the volume, then fails. */
async function failingRestoreRig() {
  const r = rig();
  const src = await filledVolume(r.volumes, 2 * MiB, 1);
  const b = await r.manager.backup({ volumeId: src.id });
  r.service.restore = async (_backup, target) => {
    await target.write(0, Buffer.alloc(64 * 1024, 7));
    throw new Error('backend exploded mid-restore');
  };
  const warnings: CairnError[] = [];
  r.manager.on('warning', (w) => warnings.push(w));
  return { ...r, src, b, warnings };
}

describe('a failed restore to a new volume whose detach fails', () => {
  it('deletes the new volume when the detach failure is transient (the detach is retried)', async () => {
    const { volumes, manager, src, b, warnings } = await failingRestoreRig();
    const detach = volumes.detach.bind(volumes);
    let failures = 0;
    volumes.detach = async (id) => {
      if (failures++ === 0) throw transient();
      return detach(id);
    };
    const { job, volume } = await manager.startRestore({ backupId: b.id, newVolume: { name: 'restored' } });
    await expect(job.done).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('backend exploded') });
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
    await expectCode(volumes.getVolume(volume.id), 'NOT_FOUND');
    expect(await manager.getVolume(src.id)).toMatchObject({ status: 'available' });
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect(warnings.filter((w) => w.code === 'BUSY')).toEqual([]);
    expect(await manager.recover()).toMatchObject({ removedVolumes: [], errors: [] });
  });

  it('when the volume cannot be detached at all, leaves it error_restoring with a warning, and recovery deletes it once it can', async () => {
    const { volumes, manager, src, b, warnings } = await failingRestoreRig();
    const attach = volumes.attach.bind(volumes);
    const detach = volumes.detach.bind(volumes);
    const attached: Attachment[] = [];
    volumes.attach = async (target, mode) => {
      const a = await attach(target, mode);
      attached.push(a);
      return a;
    };
    volumes.detach = async () => {
      throw transient();
    };
    const { job, volume } = await manager.startRestore({ backupId: b.id, newVolume: {} });
    await expect(job.done).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('backend exploded') });
    // Visible, and refused to flows that would use it: the failed restore's volume.
    expect(await manager.getVolume(volume.id)).toMatchObject({ status: 'error_restoring' });
    await expectCode(manager.backup({ volumeId: volume.id }), 'CONFLICT');
    expect(warnings).toContainEqual(expect.objectContaining({ code: 'BUSY', details: expect.objectContaining({ volumeId: volume.id, backupId: b.id }) }));
    expect((await manager.getBackup(b.id)).status).toBe('available');
    // While it is still attached, recovery tries and reports why it cannot.
    const early = await manager.recover();
    expect(early.removedVolumes).toEqual([]);
    expect(early.errors).toEqual([expect.stringContaining(volume.id)]);
    // The attachment goes (the driver recovered, the process that held it ended): recovery deletes the volume.
    volumes.detach = detach;
    for (const a of attached) await detach(a.id);
    const report = await manager.recover();
    expect(report).toMatchObject({ removedVolumes: [volume.id], errors: [] });
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
    expect(await manager.getVolume(src.id)).toMatchObject({ status: 'available' });
    expect(await manager.recover()).toMatchObject({ removedVolumes: [], errors: [] });
  });
});

describe('a process that dies during a restore to a new volume', () => {
  /** Where the dying process stops for good. */
  type Point = 'createVolume' | 'attach' | 'copy';

  /**
   * The dying process's manager: its records carry an owner that is gone (a pid that runs no
   * process), and at `point` it stops for good (the call never returns). The recovering process
   * judges liveness by the owner alone, as another process would.
   */
  async function dieAt(point: Point) {
    const volumes = new MemoryVolumeDriver();
    const service = new MemoryBackupService('mem');
    const shared = new MemoryCatalog();
    const gone = { host: hostname(), pid: 2 ** 22 + 4321 };
    const src = await filledVolume(volumes, MiB, 1);
    const setup = new BackupManager({ volumes, targets: { mem: service }, catalog: shared });
    const b = await setup.backup({ volumeId: src.id });
    const never = new Promise<never>(() => {});
    let died!: () => void;
    const dead = new Promise<void>((r) => (died = r));
    const stop = async (): Promise<never> => {
      died();
      return never;
    };
    // The dying process's driver: its own instance over the same volumes would lose its
    // attachments when it died; here they are dropped by hand once it has stopped.
    const mine: string[] = [];
    const dying = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
      createVolume: async (spec: Parameters<MemoryVolumeDriver['createVolume']>[0]) => {
        const v = await volumes.createVolume(spec);
        if (point === 'createVolume') return stop();
        return v;
      },
      attach: async (...args: Parameters<MemoryVolumeDriver['attach']>) => {
        const a = await volumes.attach(...args);
        mine.push(a.id);
        if (point === 'attach') return stop();
        return a;
      },
    });
    const dyingService = Object.assign(Object.create(service) as MemoryBackupService, {
      restore: async (...args: Parameters<MemoryBackupService['restore']>) => {
        await args[1].write(0, Buffer.alloc(4096, 9));
        return stop();
      },
    });
    const manager = new BackupManager({
      volumes: dying,
      targets: { mem: dyingService },
      // What it writes names a process that is gone: its records' owner and readers, and the
      // reader its state and intent name.
      catalog: over(shared, {
        putBackup: (r: BackupRecord, o) => shared.putBackup({ ...r, ...(r.owner ? { owner: gone } : {}), ...(r.readers ? { readers: r.readers.map(asGone) } : {}) }, o),
        putVolumeState: (s, o) => shared.putVolumeState(s.reader ? { ...s, reader: asGone(s.reader) } : s, o),
        putNewVolumeIntent: (i, o) => shared.putNewVolumeIntent(i.reader ? { ...i, reader: asGone(i.reader) } : i, o),
      }),
    });
    void manager.startRestore({ backupId: b.id, newVolume: {} }).catch(() => {});
    await dead;
    for (const id of mine) await volumes.detach(id);
    const recover = () => recoverInFlight({ catalog: shared, volumes, isLive: (r) => !!r.owner && ownerMayBeAlive(r.owner) });
    return { volumes, shared, src, b, recover };
  }

  for (const point of ['createVolume', 'attach', 'copy'] as const) {
    it(`leaves nothing behind once recovered, when it dies at ${point}`, async () => {
      const { volumes, shared, src, b, recover } = await dieAt(point);
      // What it left is accounted for: the new volume's restore job is named in the catalog.
      expect((await shared.listNewVolumeIntents()).map((i) => i.backupId)).toEqual([b.id]);
      const created = (await volumes.listVolumes()).filter((v) => v.id !== src.id);
      expect(created).toHaveLength(1);
      const report = await recover();
      expect(report.removedVolumes).toEqual(created.map((v) => v.id));
      expect(report.errors).toEqual([]);
      expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
      expect(await shared.listVolumeStates()).toEqual([]);
      expect(await shared.listNewVolumeIntents()).toEqual([]);
      expect((await shared.getBackup(b.id)).status).toBe('available');
      // Idempotent, and the source untouched.
      expect(await recover()).toMatchObject({ removedVolumes: [], errors: [], errorRestoringVolumes: [] });
      expect((await contents(volumes, src.id)).length).toBe(MiB);
    });
  }
});

describe('an intent an older Cairn kept as a volume flow state', () => {
  /**
   * A repository where a restore of the previous version died after it created its new volume:
   * its intent is a volume flow state under `cairn-new-volume-<job id>` (no record of the intent
   * kind), and the backup is left `restoring` by a process that is gone.
   */
  async function legacyLeftovers() {
    const r = await chunkedRig();
    const catalog = new RepositoryCatalog(r.service.repository);
    const src = await filledVolume(r.volumes, MiB, 1);
    const b = await r.manager.backup({ volumeId: src.id });
    await catalog.putBackup({ ...b, status: 'restoring', owner: { host: hostname(), pid: 2 ** 22 + 4321 } });
    const jobId = newId();
    const since = new Date().toISOString();
    await catalog.putVolumeState({ volumeId: `cairn-new-volume-${jobId}`, status: 'restoring-backup', previousStatus: 'creating', backupId: b.id, since }, { ifAbsent: true });
    const left = await r.volumes.createVolume({ size: MiB, name: `restore-${b.id}`, metadata: { 'cairn.restore-job': jobId } });
    return { ...r, catalog, src, b, left };
  }

  it('refuses backups and restores of its volume with CONFLICT (error_restoring) while it is recorded', async () => {
    const { manager, b, left } = await legacyLeftovers();
    await expect(manager.backup({ volumeId: left.id })).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeId: left.id, volumeStatus: 'error_restoring', backupId: b.id } });
    await expectCode(manager.startBackup({ volumeId: left.id }), 'CONFLICT');
  });

  it('recover() deletes its volume, clears the state that restore left and the intent, and puts the backup back to available', async () => {
    const { manager, catalog, volumes, src, b, left } = await legacyLeftovers();
    await catalog.putVolumeState({ volumeId: left.id, status: 'restoring-backup', previousStatus: 'available', backupId: b.id, since: new Date().toISOString() });
    const report = await manager.recover();
    expect(report).toMatchObject({ restoredBackups: [b.id], removedVolumes: [left.id], errorRestoringVolumes: [], errors: [] });
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
    expect(await catalog.listVolumeStates()).toEqual([]);
    expect(await catalog.listNewVolumeIntents()).toEqual([]);
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect(await manager.recover()).toMatchObject({ restoredBackups: [], removedVolumes: [], errors: [] });
  });
});

describe('a restore to a new volume records its intent as a NewVolumeIntent', () => {
  it('while it runs, the intent names its job and backup, and no volume state names the job; once it succeeded, the intent is gone and the volume is kept', async () => {
    const r = await chunkedRig();
    const catalog = new RepositoryCatalog(r.service.repository);
    const src = await filledVolume(r.volumes, MiB, 1);
    const b = await r.manager.backup({ volumeId: src.id });
    const copying = gate();
    const restore = r.service.restore.bind(r.service);
    r.service.restore = async (...args) => {
      await copying.arrive();
      return restore(...args);
    };
    const { job, volume } = await r.manager.startRestore({ backupId: b.id, newVolume: { name: 'copy' } });
    await copying.reached;
    // Both name the restore's reader (its manager's entry in the backup's readers): once it is gone they are settled.
    const reader = { id: expect.any(String), owner: expect.objectContaining({ pid: process.pid }), since: expect.any(String) };
    expect(await catalog.listNewVolumeIntents()).toEqual([{ jobId: job.id, backupId: b.id, since: expect.any(String), reader }]);
    expect((await catalog.listVolumeStates()).map((s) => s.volumeId)).toEqual([volume.id]);
    expect((await catalog.listVolumeStates())[0]!.reader).toEqual(reader);
    copying.release();
    await job.done;
    expect(await catalog.listNewVolumeIntents()).toEqual([]);
    expect(await r.manager.recover()).toMatchObject({ removedVolumes: [], errors: [] });
    expect((await contents(r.volumes, volume.id)).equals(await contents(r.volumes, src.id))).toBe(true);
  });
});

describe('a restore to a new volume whose intent cannot be deleted once the volume is written', () => {
  it('fails and deletes the volume, so no later recovery deletes a volume the caller was told is restored', async () => {
    const volumes = new MemoryVolumeDriver();
    const service = new MemoryBackupService();
    const catalog = new MemoryCatalog();
    const setup = new BackupManager({ volumes, targets: { memory: service }, catalog });
    const src = await filledVolume(volumes, MiB, 1);
    const b = await setup.backup({ volumeId: src.id });
    const failing = over(catalog, { deleteNewVolumeIntent: async () => Promise.reject(new CairnError('UNAVAILABLE', 'store went away', { driver: 'catalog' })) });
    const manager = new BackupManager({ volumes, targets: { memory: service }, catalog: failing });
    const { job, volume } = await manager.startRestore({ backupId: b.id, newVolume: { name: 'copy' } });
    await expectCode(job.done, 'UNAVAILABLE');
    await expectCode(volumes.getVolume(volume.id), 'NOT_FOUND');
    expect((await catalog.getBackup(b.id)).status).toBe('available');
    // The store is back: recovery finds the intent of a volume that is gone and clears it, deleting nothing.
    expect(await setup.recover()).toMatchObject({ removedVolumes: [], errors: [] });
    expect(await catalog.listNewVolumeIntents()).toEqual([]);
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
  });
});

describe('a restore to a new volume whose driver’s create fails after making the volume', () => {
  /** A backed-up volume, then the driver's create made to make the volume and fail (VolumeDriver.createVolume does not promise it leaves none). */
  async function leakyCreate() {
    const volumes = new MemoryVolumeDriver();
    const catalog = new MemoryCatalog();
    const manager = new BackupManager({ volumes, targets: { memory: new MemoryBackupService() }, catalog });
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const create = volumes.createVolume.bind(volumes);
    volumes.createVolume = async (spec) => {
      await create(spec);
      throw new CairnError('UNAVAILABLE', 'the directory could not be synced after the volume appeared', { driver: 'memory' });
    };
    return { volumes, catalog, manager, src, b };
  }

  it('deletes that volume and the intent: nothing is left, and the backup is available', async () => {
    const { volumes, catalog, manager, src, b } = await leakyCreate();
    await expectCode(manager.startRestore({ backupId: b.id, newVolume: { name: 'copy' } }), 'UNAVAILABLE');
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
    expect(await catalog.listNewVolumeIntents()).toEqual([]);
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });

  it('when that volume cannot be deleted either, keeps the intent: the volume shows error_restoring, and recovery deletes it', async () => {
    const { volumes, catalog, manager, src, b } = await leakyCreate();
    const del = volumes.deleteVolume.bind(volumes);
    volumes.deleteVolume = async () => Promise.reject(new CairnError('UNAVAILABLE', 'driver went away', { driver: 'memory' }));
    await expectCode(manager.startRestore({ backupId: b.id, newVolume: { name: 'copy' } }), 'UNAVAILABLE');
    const left = (await volumes.listVolumes()).filter((v) => v.id !== src.id);
    expect(left).toHaveLength(1);
    expect(await manager.getVolume(left[0]!.id)).toMatchObject({ status: 'error_restoring' });
    expect((await manager.getBackup(b.id)).status).toBe('available');
    volumes.deleteVolume = del;
    expect(await manager.recover()).toMatchObject({ removedVolumes: [left[0]!.id], errors: [] });
    expect((await volumes.listVolumes()).map((v) => v.id)).toEqual([src.id]);
    expect(await catalog.listNewVolumeIntents()).toEqual([]);
  });
});
