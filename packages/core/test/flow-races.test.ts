import { describe, expect, it } from 'vitest';
import { MiB, contents, expectCode, filledVolume, over } from './helpers.js';
import {
  BackupManager,
  InProcessVolumeLocks,
  MemoryBackupService,
  MemoryCatalog,
  MemoryVolumeDriver,
  type BackupJob,
  type FlowOverride,
  type BackupRecord,
  type BackupResult,
  type BackupSource,
  type BlockDevice,
  type RestoreOptions,
} from '../src/index.js';

/** A point where a copy waits: `reached` resolves when it gets there, `release()` lets it go on. */
interface Gate {
  reached: Promise<void>;
  release(): void;
}

function gate(): Gate & { arrive(): Promise<void> } {
  let arrived!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((r) => (arrived = r));
  const opened = new Promise<void>((r) => (release = r));
  return { reached, release, arrive: () => (arrived(), opened) };
}

/** Memory service whose next backup (start of the copy) or restore (first write) waits at a gate. */
class GatedService extends MemoryBackupService {
  private readonly gates: { kind: 'backup' | 'restore'; g: ReturnType<typeof gate> }[] = [];
  /** Runs after the service has committed a backup, before backup() resolves. */
  afterCommit: ((job: BackupJob) => Promise<void>) | undefined;

  constructor() {
    super('gated');
  }

  gateNext(kind: 'backup' | 'restore'): Gate {
    const g = gate();
    this.gates.push({ kind, g });
    return g;
  }

  private take(kind: 'backup' | 'restore') {
    const i = this.gates.findIndex((x) => x.kind === kind);
    return i < 0 ? undefined : this.gates.splice(i, 1)[0]!.g;
  }

  override async backup(job: BackupJob, source: BackupSource): Promise<BackupResult> {
    // At the start of the copy, not its first read: an incremental with nothing to read waits too.
    await this.take('backup')?.arrive();
    const result = await super.backup(job, source);
    await this.afterCommit?.(job);
    return result;
  }

  override async restore(backup: BackupRecord, target: BlockDevice, options?: RestoreOptions): Promise<void> {
    const g = this.take('restore');
    if (g) {
      const write = target.write.bind(target);
      const writeZeroes = target.writeZeroes.bind(target);
      let first = true;
      const hold = async () => {
        if (first) {
          first = false;
          await g.arrive();
        }
      };
      target.write = async (offset, data) => (await hold(), write(offset, data));
      target.writeZeroes = async (offset, length) => (await hold(), writeZeroes(offset, length));
    }
    return super.restore(backup, target, options);
  }
}

function rig() {
  const volumes = new MemoryVolumeDriver();
  const service = new GatedService();
  const catalog = new MemoryCatalog();
  // The test takes volume locks itself to queue jobs in a known order.
  const locks = new InProcessVolumeLocks();
  const manager = new BackupManager({ volumes, targets: { gated: service }, catalog, locks });
  return { volumes, service, catalog, manager, locks };
}

/** `p`, or a TIMEOUT rejection when it has not settled within `ms`. */
function within<T>(p: Promise<T>, ms = 2000): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(Object.assign(new Error('timed out'), { code: 'TIMEOUT' })), ms))]);
}

async function write(volumes: MemoryVolumeDriver, volumeId: string, offset: number, data: Buffer): Promise<void> {
  const a = await volumes.attach({ kind: 'volume', id: volumeId }, 'rw');
  await a.device.write(offset, data);
  await volumes.detach(a.id);
}

const settled = (p: Promise<unknown>) => p.then(
  () => 'ok',
  (e: { code?: string }) => e.code,
);

describe('restore and delete of one backup', () => {
  it('a delete racing a restore never leaves a deleted backup available again', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    const [restore, del] = await Promise.all([settled(manager.restore({ backupId: b.id, newVolume: {} })), settled(manager.deleteBackup(b.id))]);
    const record = await manager.getBackup(b.id).catch((e) => e.code as string);
    if (del === 'ok') {
      expect(record).toBe('NOT_FOUND');
      expect(restore).not.toBe('ok');
    } else {
      expect(del).toBe('CONFLICT');
      expect(restore).toBe('ok');
      expect(record).toMatchObject({ status: 'available' });
    }
    // Only the source volume is left, plus the restored one when the restore won.
    expect((await volumes.listVolumes()).length).toBe(restore === 'ok' ? 2 : 1);
  });

  it('deleting a backup is refused with CONFLICT while any of its restores runs; the last restore to end makes it available', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const expected = await contents(volumes, v.id);
    const b = await manager.backup({ volumeId: v.id });
    const held = service.gateNext('restore');
    const [r1, r2] = await Promise.all([manager.startRestore({ backupId: b.id, newVolume: {} }), manager.startRestore({ backupId: b.id, newVolume: {} })]);
    await held.reached;
    // One of the two is held; the other ends.
    await Promise.race([r1.job.done, r2.job.done]);
    expect((await manager.getBackup(b.id)).status).toBe('restoring');
    await expectCode(manager.deleteBackup(b.id), 'CONFLICT');
    held.release();
    await Promise.all([r1.job.done, r2.job.done]);
    expect((await manager.getBackup(b.id)).status).toBe('available');
    for (const r of [r1, r2]) expect((await contents(volumes, r.volume.id)).equals(expected)).toBe(true);
    await manager.deleteBackup(b.id);
    await expectCode(manager.getBackup(b.id), 'NOT_FOUND');
  });

  it('startRestore of a backup another restore holds restoring starts, to a new or an existing volume, by this manager or another (as another process would)', async () => {
    for (const first of ['new', 'existing'] as const) {
      const { volumes, service, manager, catalog } = rig();
      const v = await filledVolume(volumes, MiB);
      const expected = await contents(volumes, v.id);
      const b = await manager.backup({ volumeId: v.id });
      const held = service.gateNext('restore');
      const existing = await volumes.createVolume({ size: MiB });
      const r1 = await manager.startRestore(first === 'new' ? { backupId: b.id, newVolume: {} } : { backupId: b.id, volumeId: existing.id });
      await held.reached;
      expect((await manager.getBackup(b.id)).status).toBe('restoring');
      const other = await volumes.createVolume({ size: MiB });
      const later = [await manager.startRestore({ backupId: b.id, newVolume: {} }), await manager.startRestore({ backupId: b.id, volumeId: other.id })];
      await Promise.all(later.map((r) => r.job.done));
      expect((await manager.getBackup(b.id)).status).toBe('restoring');
      // Another manager over the catalog joins the restoring backup as one more of its readers,
      // and its end leaves it restoring while r1 runs.
      const elsewhere = new BackupManager({ volumes, targets: { gated: service }, catalog });
      const joined = await elsewhere.startRestore({ backupId: b.id, newVolume: {} });
      await joined.job.done;
      expect((await manager.getBackup(b.id)).status).toBe('restoring');
      held.release();
      await r1.job.done;
      expect((await manager.getBackup(b.id)).status).toBe('available');
      for (const r of [r1, ...later, joined]) expect((await contents(volumes, r.volume.id)).equals(expected)).toBe(true);
    }
  });

  it('a restore that finds its backup deleted once it runs fails with NOT_FOUND, touches nothing and recreates no record', async () => {
    const { volumes, manager, locks } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    const hold = await locks.acquire(dst.id);
    const restore = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    await manager.deleteBackup(b.id);
    await hold();
    await expectCode(restore.job.done, 'NOT_FOUND');
    await expectCode(manager.getBackup(b.id), 'NOT_FOUND');
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
  });
});

describe('a queued incremental and its parent', () => {
  it('records the parent it builds on once it runs, and deleting that parent meanwhile is CONFLICT', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b0 = await manager.backup({ volumeId: v.id });
    // Written before the backups: the memory driver refuses a writer while a backup reads the volume.
    await write(volumes, v.id, 0, Buffer.alloc(4096, 7));
    const expected = await contents(volumes, v.id);
    const g1 = service.gateNext('backup');
    const [j1, j2] = await Promise.all([manager.startBackup({ volumeId: v.id }), manager.startBackup({ volumeId: v.id, incremental: true })]);
    await g1.reached;
    const g2 = service.gateNext('backup');
    g1.release();
    const b1 = await j1.done;
    await g2.reached;
    expect((await manager.getBackup(j2.backupId)).parentId).toBe(b1.id);
    await expectCode(manager.deleteBackup(b1.id), 'CONFLICT');
    await expectCode(manager.deleteBackup(b1.id, { cascade: true }), 'CONFLICT');
    expect((await manager.getBackup(b1.id)).status).toBe('available');
    g2.release();
    const b2 = await j2.done;
    expect(b2).toMatchObject({ status: 'available', parentId: b1.id });
    const { volume } = await manager.restore({ backupId: b2.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(expected)).toBe(true);
    expect((await manager.getBackup(b0.id)).status).toBe('available');
  });
});

describe('the volume as it is once the backup runs', () => {
  it("the record's size is the size copied, not the size at request time", async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const started = manager.startBackup({ volumeId: v.id });
    await volumes.extendVolume(v.id, 2 * MiB);
    const b = await (await started).done;
    expect(b.size).toBe(2 * MiB);
    expect((await manager.getBackup(b.id)).size).toBe(2 * MiB);
    const small = await volumes.createVolume({ size: MiB });
    await expectCode(manager.restore({ backupId: b.id, volumeId: small.id }), 'INVALID_INPUT');
    expect((await manager.getVolume(small.id)).status).toBe('available');
    const { volume } = await manager.restore({ backupId: b.id, newVolume: {} });
    expect(volume.size).toBe(2 * MiB);
    expect((await contents(volumes, volume.id)).equals(await contents(volumes, v.id))).toBe(true);
  });
});

describe('a volume left error_restoring', () => {
  async function failedRestore() {
    const r = rig();
    const src = await filledVolume(r.volumes, 2 * MiB, 1);
    const b = await r.manager.backup({ volumeId: src.id });
    const dst = await filledVolume(r.volumes, 2 * MiB, 2);
    const restore = r.service.restore.bind(r.service);
    r.service.restore = async (backup, target, options) => {
      let n = 0;
      const w = target.write.bind(target);
      target.write = async (offset, data) => {
        if (++n > 1) throw new Error('backend went away');
        return w(offset, data);
      };
      return restore(backup, target, options);
    };
    return { ...r, b, dst, heal: () => (r.service.restore = restore) };
  }

  it('cannot be backed up: CONFLICT, no record, and it stays error_restoring', async () => {
    const { manager, b, dst, heal } = await failedRestore();
    await expectCode(manager.restore({ backupId: b.id, volumeId: dst.id }), 'INTERNAL');
    heal();
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
    const before = (await manager.listBackups()).length;
    await expect(manager.backup({ volumeId: dst.id })).rejects.toMatchObject({ code: 'CONFLICT', details: { volumeStatus: 'error_restoring' } });
    expect((await manager.listBackups()).length).toBe(before);
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
    // A restore that succeeds clears it; then it can be backed up.
    await manager.restore({ backupId: b.id, volumeId: dst.id });
    expect((await manager.backup({ volumeId: dst.id })).status).toBe('available');
  });

  it('a backup queued behind the restore that fails is refused once it runs, and leaves error_restoring', async () => {
    const { manager, locks, b, dst } = await failedRestore();
    const hold = await locks.acquire(dst.id);
    const restore = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    const backup = await manager.startBackup({ volumeId: dst.id });
    await hold();
    await expectCode(restore.job.done, 'INTERNAL');
    await expectCode(backup.done, 'CONFLICT');
    expect((await manager.getBackup(backup.backupId)).status).toBe('error');
    expect((await manager.getVolume(dst.id)).status).toBe('error_restoring');
  });
});

describe('a cancel after the service committed the backup', () => {
  it('is too late: the backup completes available and its parent can still be deleted with it', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b0 = await manager.backup({ volumeId: v.id });
    await write(volumes, v.id, 0, Buffer.alloc(4096, 9));
    const expected = await contents(volumes, v.id);
    let job!: Awaited<ReturnType<typeof manager.startBackup>>;
    service.afterCommit = async () => {
      job.cancel('too late');
      await new Promise((r) => setTimeout(r, 5));
    };
    job = await manager.startBackup({ volumeId: v.id, incremental: true });
    const b1 = await job.done;
    service.afterCommit = undefined;
    expect(b1).toMatchObject({ status: 'available', parentId: b0.id });
    expect((await manager.getBackup(b1.id)).status).toBe('available');
    const { volume } = await manager.restore({ backupId: b1.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(expected)).toBe(true);
    await manager.deleteBackup(b0.id, { cascade: true });
    expect(await manager.listBackups()).toEqual([]);
    expect((await manager.verify()).checked).toEqual([]);
  });
  it('a failure after the service committed the backup deletes its data before the record goes to error', async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const put = catalog.putBackup.bind(catalog);
    catalog.putBackup = async (record) => {
      if (record.status === 'available') throw new Error('catalog went away');
      return put(record);
    };
    const job = await manager.startBackup({ volumeId: v.id });
    await expectCode(job.done, 'INTERNAL');
    catalog.putBackup = put;
    expect((await manager.getBackup(job.backupId)).status).toBe('error');
    expect((await service.verify()).checked).toEqual([]);
  });
});

describe('InProcessVolumeLocks with a signal', () => {
  it('a waiter whose signal fires rejects at once with CANCELLED, and delays no one behind it', async () => {
    const locks = new InProcessVolumeLocks();
    const holder = await locks.acquire('v');
    const controller = new AbortController();
    const cancelled = locks.acquire('v', controller.signal);
    let thirdHolds = false;
    const third = locks.acquire('v').then((release) => ((thirdHolds = true), release));
    controller.abort();
    await expectCode(within(cancelled), 'CANCELLED');
    expect(thirdHolds).toBe(false);
    await holder();
    const release = await within(third);
    await expectCode(within(locks.acquire('v', AbortSignal.abort())), 'CANCELLED');
    await release();
    await (await within(locks.acquire('v')))();
  });
});

describe('a job cancelled while it waits for the volume', () => {
  it('a queued restore ends CANCELLED at once and touches nothing; the restore before it stands', async () => {
    const { volumes, service, manager, locks } = rig();
    const src = await filledVolume(volumes, MiB, 1);
    const expected = await contents(volumes, src.id);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const held = service.gateNext('restore');
    const hold = await locks.acquire(dst.id);
    const r1 = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    const r2 = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    await hold();
    await held.reached;
    r2.job.cancel('changed my mind');
    await expectCode(within(r2.job.done), 'CANCELLED');
    expect(manager.listJobs().map((j) => j.id)).toEqual([r1.job.id]);
    held.release();
    await r1.job.done;
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(expected)).toBe(true);
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });

  it('a queued backup ends CANCELLED at once, its record in error, the running flow untouched', async () => {
    const { volumes, service, manager, locks } = rig();
    const v = await filledVolume(volumes, MiB);
    const held = service.gateNext('backup');
    const hold = await locks.acquire(v.id);
    const j1 = await manager.startBackup({ volumeId: v.id });
    const j2 = await manager.startBackup({ volumeId: v.id });
    await hold();
    await held.reached;
    j2.cancel('not needed');
    await expectCode(within(j2.done), 'CANCELLED');
    expect((await manager.getBackup(j2.backupId)).failReason).toMatch(/^CANCELLED/);
    expect((await manager.getVolume(v.id)).status).toBe('backing-up');
    held.release();
    expect((await j1.done).status).toBe('available');
    expect((await manager.getVolume(v.id)).status).toBe('available');
  });

  it('a queued restore re-checks the volume once it runs: attached meanwhile is CONFLICT, nothing written, no error_restoring', async () => {
    const { volumes, manager, locks } = rig();
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    const hold = await locks.acquire(dst.id);
    const restore = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    const user = await volumes.attach({ kind: 'volume', id: dst.id }, 'rw');
    await hold();
    await expectCode(restore.job.done, 'CONFLICT');
    expect((await manager.getVolume(dst.id)).status).toBe('in-use');
    await volumes.detach(user.id);
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });
});

describe('MemoryBackupService: a volume that grew past a partial last block', () => {
  it('an incremental re-reads the parent\'s short last block, and restore into an existing volume is byte-exact', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB + 4096, 1); // the last 64 KiB block holds 4 KiB
    await manager.backup({ volumeId: v.id });
    await volumes.extendVolume(v.id, 2 * MiB);
    const inc = await manager.backup({ volumeId: v.id, incremental: true });
    // The short block (16) and the new ones (17–31): 16 blocks of 64 KiB.
    expect(inc.stats!.bytesRead).toBe(MiB);
    const dst = await filledVolume(volumes, 2 * MiB, 77);
    await manager.restore({ backupId: inc.id, volumeId: dst.id });
    expect((await contents(volumes, dst.id)).equals(await contents(volumes, v.id))).toBe(true);
    expect((await manager.verify(inc.id)).problems).toEqual([]);
  });

  it('restore writes whole blocks: a short block taken from the parent (as earlier versions stored it) leaves no stale bytes', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB + 4096, 1);
    const full = await manager.backup({ volumeId: v.id });
    await volumes.extendVolume(v.id, 2 * MiB);
    const inc = await manager.backup({ volumeId: v.id, incremental: true });
    // Make the incremental what an earlier version wrote: block 16 left to the parent, short.
    const stored = (service as unknown as { backups: Map<string, { blocks: Map<number, Buffer | null>; hashes: string[] }> }).backups;
    stored.get(inc.id)!.blocks.delete(16);
    stored.get(inc.id)!.hashes[16] = stored.get(full.id)!.hashes[16]!;
    const dst = await filledVolume(volumes, 2 * MiB, 77);
    await manager.restore({ backupId: inc.id, volumeId: dst.id });
    expect((await contents(volumes, dst.id)).equals(await contents(volumes, v.id))).toBe(true);
  });
});

describe('BackupManager construction', () => {
  it('refuses a target whose key is not its service name with INVALID_INPUT', () => {
    const base = { volumes: new MemoryVolumeDriver(), catalog: new MemoryCatalog() };
    expect(() => new BackupManager({ ...base, targets: { primary: new MemoryBackupService('memory') } })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
    expect(() => new BackupManager({ ...base, targets: { memory: new MemoryBackupService('memory') } })).not.toThrow();
  });
});

describe('two processes restoring over one volume left error_restoring', () => {
  /** The memory driver as a flow-override driver (Cinder's VMDK kind): core attaches nothing, and its restoreBackup counts the restores it runs. */
  class OverrideVolumes extends MemoryVolumeDriver {
    override readonly capabilities = { ...new MemoryVolumeDriver().capabilities, flowOverride: true };
    restores = 0;
    readonly flowOverride: FlowOverride = {
      backupVolume: async () => Promise.reject(new Error('not used here')),
      restoreBackup: async () => void this.restores++,
    };
  }

  it('with a driver core does not attach, one takes the volume and the other is CONFLICT; one restore runs', async () => {
    const catalog = new MemoryCatalog();
    const service = new MemoryBackupService();
    const plain = new MemoryVolumeDriver();
    const setup = new BackupManager({ volumes: plain, targets: { memory: service }, catalog });
    const b1 = await setup.backup({ volumeId: (await filledVolume(plain, MiB, 1)).id });
    const b2 = await setup.backup({ volumeId: (await filledVolume(plain, MiB, 2)).id });
    const volumes = new OverrideVolumes();
    const dst = await volumes.createVolume({ size: MiB });
    await catalog.putVolumeState({ volumeId: dst.id, status: 'error_restoring', previousStatus: 'available', backupId: b1.id, since: new Date().toISOString() });
    // Process A has read the state (error_restoring) and not yet replaced it.
    const aWrites = gate();
    let gated = false;
    const catalogA = over(catalog, {
      putVolumeState: async (state, options) => {
        if (state.status === 'restoring-backup' && !gated) {
          gated = true;
          await aWrites.arrive();
        }
        return catalog.putVolumeState(state, options);
      },
    });
    // Process B gets as far as it can meanwhile: into its restore, or waiting for the section of the backup the state names.
    const bWaits = gate();
    const catalogB = over(catalog, {
      section: (id, fn, signal) => {
        if (id === b1.id) void bWaits.arrive();
        return catalog.section(id, fn, signal);
      },
    });
    const a = new BackupManager({ volumes, targets: { memory: service }, catalog: catalogA });
    const b = new BackupManager({ volumes, targets: { memory: service }, catalog: catalogB });
    const first = a.restore({ backupId: b1.id, volumeId: dst.id });
    await aWrites.reached;
    const second = b.restore({ backupId: b2.id, volumeId: dst.id });
    const bSettled = second.then(() => undefined, () => undefined);
    await Promise.race([bWaits.reached, bSettled]);
    aWrites.release();
    const outcomes = await Promise.allSettled([first, second]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected']);
    expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'CONFLICT' });
    expect(volumes.restores).toBe(1);
    expect(await catalog.getVolumeState(dst.id)).toBeUndefined();
    expect((await catalog.getBackup(b2.id)).status).toBe('available');
  });
});
