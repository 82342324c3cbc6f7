import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { MiB, expectCode, filledVolume, gate, over, rig } from './helpers.js';
import { BackupManager, InProcessVolumeLocks, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type BackupRecord, type Catalog } from '../src/index.js';
import { recoverInFlight } from '../src/flow/recovery.js';

/** Where recovery is held up while a flow of this process ends; the returned function disarms it. */
type Slowdown = (catalog: MemoryCatalog, id: string, meanwhile: () => Promise<void>) => () => void;

/** recover()'s listing of every record runs `meanwhile` once it is taken, before recovery acts on it. */
const slowListing: Slowdown = (catalog, _id, meanwhile) => {
  const list = catalog.listBackups.bind(catalog);
  const disarm = () => void (catalog.listBackups = list);
  catalog.listBackups = async (filter) => {
    const listed = await list(filter);
    if (!filter) {
      disarm();
      await meanwhile();
    }
    return listed;
  };
  return disarm;
};

/** The next getBackup of `id` runs `meanwhile` after the record was read, before it is returned. */
const slowRead: Slowdown = (catalog, id, meanwhile) => {
  const get = catalog.getBackup.bind(catalog);
  const disarm = () => void (catalog.getBackup = get);
  catalog.getBackup = async (backupId) => {
    const read = await get(backupId);
    if (backupId === id) {
      disarm();
      await meanwhile();
    }
    return read;
  };
  return disarm;
};

describe.each([
  ['its listing', slowListing],
  ['its read of the record', slowRead],
] as const)("recover() while this process's flow of a record ends during %s", (_where, slow) => {
  it('a backup that ends meanwhile stays available, with its service data', async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    const copying = gate();
    const backup = service.backup.bind(service);
    service.backup = async (job, source) => {
      await copying.arrive();
      return backup(job, source);
    };
    const job = await manager.startBackup({ volumeId: v.id });
    await copying.reached;
    const disarm = slow(catalog, job.backupId, async () => {
      copying.release();
      await job.done;
    });
    const report = await manager.recover();
    disarm();
    copying.release();
    await job.done;
    expect(report.failedBackups).toEqual([]);
    const record = await manager.getBackup(job.backupId);
    expect(record.status).toBe('available');
    expect(record.failReason).toBeUndefined();
    expect(Object.keys(record.serviceData).length).toBeGreaterThan(0);
  });

  it('a backup restored and deleted meanwhile stays deleted', async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: v.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const writing = gate();
    const restore = service.restore.bind(service);
    service.restore = async (backup, target, options) => {
      await writing.arrive();
      return restore(backup, target, options);
    };
    const { job } = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    await writing.reached;
    let ended = false;
    const end = async () => {
      ended = true;
      writing.release();
      await job.done;
      await manager.deleteBackup(b.id);
    };
    const disarm = slow(catalog, b.id, end);
    const report = await manager.recover();
    disarm();
    if (!ended) await end();
    expect(report.restoredBackups).toEqual([]);
    await expectCode(manager.getBackup(b.id), 'NOT_FOUND');
  });
});

describe('resetState while a live process of this host takes the record', () => {
  it('is refused, and leaves the restore that began meanwhile alone', async () => {
    const volumes = new MemoryVolumeDriver();
    const service = new MemoryBackupService('mem');
    const shared = new MemoryCatalog();
    const admin = new BackupManager({ volumes, targets: { mem: service }, catalog: shared });
    const v = await filledVolume(volumes, MiB, 1);
    const dst = await filledVolume(volumes, MiB, 2);
    const b = await admin.backup({ volumeId: v.id });
    // Between the reset's first look and its work, another live process of this host starts restoring the backup.
    const elsewhere = { host: hostname(), pid: process.ppid };
    const catalog: Catalog = over(shared, {
      getBackup: async (id: string) => {
        const read = await shared.getBackup(id);
        catalog.getBackup = shared.getBackup.bind(shared);
        await shared.putBackup({ ...read, status: 'restoring', owner: elsewhere });
        await shared.putVolumeState({ volumeId: dst.id, status: 'restoring-backup', previousStatus: 'available', backupId: b.id, since: new Date().toISOString() });
        return read;
      },
    });
    const resetter = new BackupManager({ volumes, targets: { mem: service }, catalog });
    await expectCode(resetter.resetState(b.id, 'error'), 'CONFLICT');
    expect(await shared.getBackup(b.id)).toMatchObject({ status: 'restoring', owner: elsewhere });
    expect((await admin.getVolume(dst.id)).status).toBe('restoring-backup');
  });
});

describe('checkpoint pruning at the end of a backup', () => {
  it('keeps the checkpoint of a backup of the volume that another process began once this one let the volume go', async () => {
    const volumes = new MemoryVolumeDriver();
    const service = new MemoryBackupService('mem');
    const shared = new MemoryCatalog();
    const v = await filledVolume(volumes, MiB, 1);
    // Process A stops once it has cleared the volume's state; B then begins and stops once it has its checkpoint.
    const cleared = gate();
    const a = new BackupManager({
      volumes,
      targets: { mem: service },
      locks: new InProcessVolumeLocks(),
      catalog: over(shared, {
        clearVolumeState: async (volumeId: string) => {
          await shared.clearVolumeState(volumeId);
          await cleared.arrive();
        },
      }),
    });
    const b = new BackupManager({ volumes, targets: { mem: service }, locks: new InProcessVolumeLocks(), catalog: shared });
    const cbt = volumes.changedBlockTracking;
    const create = cbt.createCheckpoint.bind(cbt);
    const checkpointed = gate();
    let calls = 0;
    cbt.createCheckpoint = async (volumeId) => {
      const cp = await create(volumeId);
      if (++calls === 2) await checkpointed.arrive();
      return cp;
    };
    const first = await a.startBackup({ volumeId: v.id });
    await cleared.reached;
    const second = await b.startBackup({ volumeId: v.id });
    await checkpointed.reached;
    cleared.release();
    await first.done;
    checkpointed.release();
    const done = await second.done;
    expect(done.checkpointId).toBeDefined();
    expect((await cbt.listCheckpoints(v.id)).map((c) => c.id)).toContain(done.checkpointId);
  });
});

describe("two recoveries of one dead flow's volume state", () => {
  it('the one that read the state before the other settled it never settles a state a flow has put in its place', async () => {
    const shared = new MemoryCatalog();
    const volumes = new MemoryVolumeDriver();
    const v = await filledVolume(volumes, MiB);
    const dead = { host: hostname(), pid: 2 ** 22 + 4321 };
    const base: BackupRecord = {
      id: 'crashed', name: '', description: '', volumeId: v.id, volumeName: v.name, size: MiB, status: 'creating', owner: dead,
      service: 'memory', incremental: false, volumeMetadata: {}, serviceData: {}, createdAt: '2026-12-06T00:00:00.000Z', updatedAt: '2026-12-06T00:00:00.000Z',
    };
    await shared.putBackup(base);
    await shared.putVolumeState({ volumeId: v.id, status: 'backing-up', previousStatus: 'available', backupId: 'crashed', since: base.createdAt });
    const isLive = (b: BackupRecord) => b.id !== 'crashed';
    // The second recovery reads the crashed flow's state, then waits before it acts on it.
    const paused = gate();
    let readOnce = false;
    const slow = over(shared, {
      getVolumeState: async (volumeId: string) => {
        const state = await shared.getVolumeState(volumeId);
        if (!readOnce && volumeId === v.id) {
          readOnce = true;
          await paused.arrive();
        }
        return state;
      },
    });
    const second = recoverInFlight({ catalog: slow, volumes, isLive });
    await paused.reached;
    // Meanwhile the first recovery runs (given a moment), and then a new backup tries to begin
    // its flow on the volume, as beginVolumeFlow does.
    const first = recoverInFlight({ catalog: over(shared, {}), volumes, isLive });
    await Promise.race([first, new Promise((r) => setTimeout(r, 300))]);
    const began = await shared.putVolumeState({ volumeId: v.id, status: 'backing-up', previousStatus: 'available', backupId: 'next', since: new Date().toISOString() }, { ifAbsent: true }).then(
      () => true,
      () => false,
    );
    paused.release();
    await Promise.all([first, second]);
    // A flow that began keeps its state; otherwise the crashed flow's is gone.
    expect(await shared.getVolumeState(v.id)).toEqual(began ? expect.objectContaining({ backupId: 'next' }) : undefined);
  });
});
