import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { MiB, ScriptedService, contents, expectCode, filledVolume, gate, over, rig } from './helpers.js';
import { BackupManager, CairnError, InProcessVolumeLocks, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, ownerMayBeAlive, type BackupRecord, type Job, type VolumeFlowState } from '../src/index.js';
import { recoverInFlight } from '../src/flow/recovery.js';

const settled = (p: Promise<unknown>) => p.then(
  () => 'ok',
  (e: { code?: string }) => e.code,
);

const catalogDown = () => new CairnError('UNAVAILABLE', 'catalog went away', { driver: 'catalog' });

describe('recover() in a long-running process: records its own jobs left behind', () => {
  it('recover() fails to error a creating record whose job failed its final writes, and still skips a running job', async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    const w = await filledVolume(volumes, MiB, 2);
    const put = catalog.putBackup.bind(catalog);
    catalog.putBackup = async (record, options) => {
      if (record.volumeId === v.id && record.status !== 'creating') throw catalogDown();
      return put(record, options);
    };
    const failed = await manager.startBackup({ volumeId: v.id });
    await expectCode(failed.done, 'UNAVAILABLE');
    catalog.putBackup = put;
    expect((await manager.getBackup(failed.backupId)).status).toBe('creating');
    service.stallAfterBytes = 0;
    const running = await manager.startBackup({ volumeId: w.id });
    await service.reachedStall;
    const report = await manager.recover();
    expect(report.failedBackups).toEqual([failed.backupId]);
    expect(report.skipped).toEqual([running.backupId]);
    expect(await manager.getBackup(failed.backupId)).toMatchObject({ status: 'error', owner: undefined });
    expect((await manager.getVolume(w.id)).status).toBe('backing-up');
    running.cancel();
    await expectCode(running.done, 'CANCELLED');
  });

  it('recover() puts back to available a backup whose last restore could not end it, with the restored volume left available', async () => {
    const { volumes, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: v.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const put = catalog.putBackup.bind(catalog);
    catalog.putBackup = async (record, options) => {
      if (record.id === b.id && record.status === 'available') throw catalogDown();
      return put(record, options);
    };
    await manager.restore({ backupId: b.id, volumeId: dst.id }); // the failed end is a warning only
    catalog.putBackup = put;
    expect((await manager.getBackup(b.id)).status).toBe('restoring');
    const report = await manager.recover();
    expect(report).toMatchObject({ restoredBackups: [b.id], skipped: [], errorRestoringVolumes: [] });
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(await contents(volumes, v.id))).toBe(true);
  });

  it('recover() resumes a delete this process left deleting (its service and its error_deleting write failed)', async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: v.id });
    const del = service.delete.bind(service);
    const put = catalog.putBackup.bind(catalog);
    service.delete = async () => {
      throw catalogDown();
    };
    catalog.putBackup = async (record, options) => {
      if (record.status === 'error_deleting') throw catalogDown();
      return put(record, options);
    };
    await expectCode(manager.deleteBackup(b.id), 'UNAVAILABLE');
    service.delete = del;
    catalog.putBackup = put;
    expect((await manager.getBackup(b.id)).status).toBe('deleting');
    const report = await manager.recover();
    expect(report).toMatchObject({ resumedDeletes: [b.id], skipped: [], errors: [] });
    await expectCode(manager.getBackup(b.id), 'NOT_FOUND');
  });

  it("recover() leaves this process's running restores (two of one backup) and delete alone, and their volume states", async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    const w = await filledVolume(volumes, MiB, 2);
    const b = await manager.backup({ volumeId: v.id });
    const doomed = await manager.backup({ volumeId: w.id });
    const held = gate();
    let started = 0;
    let bothStarted!: () => void;
    const restoring = new Promise<void>((r) => (bothStarted = r));
    const restore = service.restore.bind(service);
    service.restore = async (...args) => {
      if (++started === 2) bothStarted();
      await held.arrive();
      return restore(...args);
    };
    const deleteData = service.delete.bind(service);
    const deleting = gate();
    let deletes = 0;
    service.delete = async (backup) => {
      if (++deletes === 1) await deleting.arrive(); // the delete's own call; a resumed one goes on
      return deleteData(backup);
    };
    const restores = await Promise.all([0, 1].map(() => manager.startRestore({ backupId: b.id, newVolume: {} })));
    const del = manager.deleteBackup(doomed.id);
    await Promise.all([restoring, deleting.reached]);
    const report = await manager.recover();
    expect(report.skipped.sort()).toEqual([b.id, doomed.id].sort());
    expect(report).toMatchObject({ restoredBackups: [], resumedDeletes: [], errorRestoringVolumes: [] });
    // The two restores' volumes, and their intents to create them (new volumes).
    expect((await catalog.listVolumeStates()).map((s) => s.status)).toEqual(['restoring-backup', 'restoring-backup']);
    expect((await catalog.listNewVolumeIntents()).map((i) => i.jobId).sort()).toEqual(restores.map((r) => r.job.id).sort());
    held.release();
    deleting.release();
    await Promise.all([...restores.map((r) => r.job.done), del]);
    expect((await manager.getBackup(b.id)).status).toBe('available');
    await expectCode(manager.getBackup(doomed.id), 'NOT_FOUND');
    expect(await manager.recover()).toMatchObject({ skipped: [], restoredBackups: [], resumedDeletes: [] });
  });

  it("recover() of a second manager in the process leaves the first one's running backup alone", async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    const other = new BackupManager({ volumes, targets: { scripted: service }, catalog });
    service.stallAfterBytes = 0;
    const job = await manager.startBackup({ volumeId: v.id });
    await service.reachedStall;
    const report = await other.recover();
    expect(report).toMatchObject({ skipped: [job.backupId], failedBackups: [], resetVolumes: [] });
    job.cancel();
    await expectCode(job.done, 'CANCELLED');
    expect(await other.recover()).toMatchObject({ skipped: [], failedBackups: [] });
  });
});

describe('a recovery in another process while a restore ends', () => {
  it('never marks error_restoring a volume whose restore completed', async () => {
    const volumes = new MemoryVolumeDriver();
    const service = new MemoryBackupService('mem');
    const shared = new MemoryCatalog();
    // The restoring process: another live process on this host, as the records it writes say.
    const elsewhere = { host: hostname(), pid: process.ppid };
    const src = await filledVolume(volumes, MiB, 1);
    const dst = await filledVolume(volumes, MiB, 2);
    const clearing = gate();
    let cleared!: () => void;
    const clearedDst = new Promise<void>((r) => (cleared = r));
    const restorer = new BackupManager({
      volumes,
      targets: { mem: service },
      catalog: over(shared, {
        putBackup: (r: BackupRecord, o) => shared.putBackup(r.owner ? { ...r, owner: elsewhere } : r, o),
        clearVolumeState: async (volumeId: string) => {
          if (volumeId === dst.id) await clearing.arrive();
          await shared.clearVolumeState(volumeId);
          if (volumeId === dst.id) cleared();
        },
      }),
    });
    // The recovering process reads the volume's state, then the restore ends, then it goes on.
    const recoverer = new BackupManager({
      volumes,
      targets: { mem: service },
      catalog: over(shared, {
        getVolumeState: async (volumeId: string): Promise<VolumeFlowState | undefined> => {
          const state = await shared.getVolumeState(volumeId);
          if (volumeId === dst.id) {
            clearing.release();
            await clearedDst;
          }
          return state;
        },
      }),
    });
    const b = await restorer.backup({ volumeId: src.id });
    const restore = restorer.restore({ backupId: b.id, volumeId: dst.id });
    await clearing.reached; // the restore is done and settles the volume's state
    const report = await recoverer.recover();
    clearing.release();
    await restore;
    expect(report.errorRestoringVolumes).toEqual([]);
    expect((await recoverer.getVolume(dst.id)).status).toBe('available');
    expect((await recoverer.getBackup(b.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(await contents(volumes, src.id))).toBe(true);
  });
});

describe('a recovery in another process while a backup ends', () => {
  it('never clears the volume state of a backup of the volume begun after the one that ended', async () => {
    const volumes = new MemoryVolumeDriver();
    const service = new ScriptedService();
    const shared = new MemoryCatalog();
    const v = await filledVolume(volumes, MiB, 1);
    const clearing = gate();
    let cleared!: () => void;
    const clearedV = new Promise<void>((r) => (cleared = r));
    // The backing-up process: its settling of the volume's state waits at the gate.
    const ending = new BackupManager({
      volumes,
      targets: { scripted: service },
      catalog: over(shared, {
        clearVolumeState: async (volumeId: string) => {
          if (volumeId === v.id) await clearing.arrive();
          await shared.clearVolumeState(volumeId);
          if (volumeId === v.id) cleared();
        },
      }),
    });
    // A third process's backup of the volume, begun once the first has ended.
    const next = new BackupManager({ volumes, targets: { scripted: service }, catalog: shared, locks: new InProcessVolumeLocks() });
    let job: Job | undefined;
    const beginNext = async () => {
      service.stallAfterBytes = 0;
      job = await next.startBackup({ volumeId: v.id });
      await service.reachedStall; // its flow has begun on the volume
    };
    // The recovering process reads the volume's state, then the backup ends and the next begins,
    // then it goes on. It sees no flow of this process as held: the owner alone tells it what is live.
    const recoverElsewhere = () =>
      recoverInFlight({
        volumes,
        isLive: (b) => !!b.owner && ownerMayBeAlive(b.owner),
        finishDelete: async () => {},
        catalog: over(shared, {
          getVolumeState: async (volumeId: string): Promise<VolumeFlowState | undefined> => {
            const state = await shared.getVolumeState(volumeId);
            if (volumeId === v.id && !job) {
              clearing.release();
              await clearedV;
              await beginNext();
            }
            return state;
          },
        }),
      });
    const first = await ending.startBackup({ volumeId: v.id });
    await clearing.reached; // the copy is done; the backup settles the volume's state
    const report = await recoverElsewhere();
    clearing.release();
    expect(await first.done).toMatchObject({ status: 'available' });
    if (!job) await beginNext();
    expect(report.resetVolumes).toEqual([]);
    expect(await shared.getVolumeState(v.id)).toMatchObject({ status: 'backing-up', backupId: job!.backupId });
    job!.cancel();
    await expectCode(job!.done, 'CANCELLED');
    expect(await shared.getVolumeState(v.id)).toBeUndefined();
  });
});

describe('a backup whose error record cannot be written', () => {
  it("the job rejects with the backup's own error; the failed catalog write is a warning and recover() fails the record later", async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    service.failAfterBytes = 0;
    const put = catalog.putBackup.bind(catalog);
    catalog.putBackup = async (record, options) => {
      if (record.status === 'error') throw catalogDown();
      return put(record, options);
    };
    const warnings: CairnError[] = [];
    manager.on('warning', (w) => warnings.push(w));
    const job = await manager.startBackup({ volumeId: v.id });
    await expect(job.done).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('backend exploded') });
    expect(warnings).toMatchObject([{ code: 'UNAVAILABLE', details: { backupId: job.backupId } }]);
    catalog.putBackup = put;
    expect((await manager.getVolume(v.id)).status).toBe('available');
    expect((await manager.getBackup(job.backupId)).status).toBe('creating');
    expect((await manager.recover()).failedBackups).toEqual([job.backupId]);
  });
});

describe('two processes beginning a flow on one volume', () => {
  it('of two backups that both find the volume in no flow, one runs and the other is CONFLICT', async () => {
    const volumes = new MemoryVolumeDriver();
    const service = new MemoryBackupService('mem');
    const shared = new MemoryCatalog();
    const v = await filledVolume(volumes, MiB, 1);
    // Each flow's write of the volume's state waits (up to 2 s) until the other's comes too:
    // both have found the volume free by then.
    let arrived = 0;
    let meet!: () => void;
    const met = new Promise<void>((r) => (meet = r));
    const catalog = over(shared, {
      putVolumeState: async (state, options) => {
        if (state.status === 'backing-up' && ++arrived === 2) meet();
        if (state.status === 'backing-up') await Promise.race([met, new Promise((r) => setTimeout(r, 2000))]);
        return shared.putVolumeState(state, options);
      },
    });
    // Two processes: each its own manager and in-process locks, one catalog and one set of volumes.
    const managers = [0, 1].map(() => new BackupManager({ volumes, targets: { mem: service }, catalog, locks: new InProcessVolumeLocks() }));
    const jobs = await Promise.all(managers.map((m) => m.startBackup({ volumeId: v.id })));
    const results = await Promise.all(jobs.map((j) => settled(j.done)));
    expect([...results].sort()).toEqual(['CONFLICT', 'ok']);
    const refused = jobs[results.indexOf('CONFLICT')]!;
    expect((await shared.getBackup(refused.backupId)).status).toBe('error');
    expect(await shared.getVolumeState(v.id)).toBeUndefined();
  });

  it('importRecord of an id the catalog already has is ALREADY_EXISTS and leaves the record as it was', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: v.id, name: 'first' });
    const exported = await manager.exportRecord(b.id);
    await expectCode(manager.importRecord(exported.service, exported.record), 'ALREADY_EXISTS');
    expect(await manager.getBackup(b.id)).toEqual(b);
  });
});
