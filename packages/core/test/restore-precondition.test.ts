import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type VolumeFlowState, type VolumeLocks } from '../src/index.js';
import { MiB, ScriptedService, contents, expectCode, filledVolume, gate, rig } from './helpers.js';

/**
 * A restore onto an existing volume that someone has attached (read-only too, which the driver
 * reports `available`) is refused by startRestore itself, before any job (assertTakesRestoreAttach),
 * and again by the job's own read-write attach when the reader came after the start.
 */
describe('startRestore onto a volume someone reads', () => {
  it('rejects with BUSY before any job: none is listed, the volume and the backup are as they were', async () => {
    const { volumes, manager } = rig();
    const b = await manager.backup({ volumeId: (await filledVolume(volumes, MiB, 1)).id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    const reader = await volumes.attach({ kind: 'volume', id: dst.id }, 'ro');
    await expectCode(manager.startRestore({ backupId: b.id, volumeId: dst.id }), 'BUSY');
    expect(manager.listJobs()).toEqual([]);
    await volumes.detach(reader.id);
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
  });

  it('a reader that attaches after the start, while the job waits for the lock, fails the job with BUSY before it writes', async () => {
    const volumes = new MemoryVolumeDriver();
    /** Once set, the volume's lock is held by someone else until it is released. */
    let held: ReturnType<typeof gate> | undefined;
    const locks: VolumeLocks = { acquire: async () => (await held?.arrive(), async () => {}) };
    const manager = new BackupManager({ volumes, targets: { scripted: new ScriptedService() }, catalog: new MemoryCatalog(), locks });
    const b = await manager.backup({ volumeId: (await filledVolume(volumes, MiB, 1)).id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    held = gate();
    const { job } = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    await held.reached;
    const reader = await volumes.attach({ kind: 'volume', id: dst.id }, 'ro');
    held.release();
    await expectCode(job.done, 'BUSY');
    await volumes.detach(reader.id);
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
  });
});

/**
 * The probe attaches the volume read-write for an instant (the driver contract lists no
 * attachments to judge by). A flow of another manager or process whose own attach meets it is
 * refused BUSY, and retries (flow-attach.ts): it never fails for the probe.
 */
describe("a restore's precondition probe met by another manager's flow", () => {
  it("a backup in another manager whose read-only attach comes while the probe is attached completes", async () => {
    const volumes = new MemoryVolumeDriver();
    const catalog = new MemoryCatalog();
    const service = new MemoryBackupService('mem');
    const setup = new BackupManager({ volumes, targets: { mem: service }, catalog });
    const b = await setup.backup({ volumeId: (await filledVolume(volumes, MiB, 1)).id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    // The restoring manager: its probe stays attached until the backup's attach has been refused.
    const probeDetach = gate();
    let probed = false;
    const restoring = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
      detach: async (id: string) => {
        if (!probed) {
          probed = true;
          await probeDetach.arrive();
        }
        return volumes.detach(id);
      },
    });
    const restorer = new BackupManager({ volumes: restoring, targets: { mem: service }, catalog });
    // The backing-up manager (another process): it has read the volume (available) and lays its
    // flow state, then attaches, only once the restore's probe is attached.
    const layState = gate();
    const refusals: string[] = [];
    const backingUp = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
      attach: async (...args: Parameters<MemoryVolumeDriver['attach']>) =>
        volumes.attach(...args).catch((err: { code?: string }) => {
          refusals.push(String(err.code));
          probeDetach.release();
          throw err;
        }),
    });
    const backer = new BackupManager({
      volumes: backingUp,
      targets: { mem: service },
      catalog: Object.assign(Object.create(catalog) as MemoryCatalog, {
        putVolumeState: async (state: VolumeFlowState, o?: { ifAbsent?: boolean }) => (await layState.arrive(), catalog.putVolumeState(state, o)),
      }),
    });
    const backup = backer.backup({ volumeId: dst.id });
    await layState.reached;
    const started = restorer.startRestore({ backupId: b.id, volumeId: dst.id });
    await probeDetach.reached;
    layState.release();
    expect(await backup).toMatchObject({ status: 'available', volumeId: dst.id });
    expect(refusals).toEqual(['BUSY']);
    // The restore, refused at start or by its job (the volume was backing-up), or done.
    const restored = await started.then((s) => s.job.done).then(() => 'restored', (e: { code?: string }) => String(e.code));
    expect(['CONFLICT', 'restored']).toContain(restored);
    if (restored === 'CONFLICT') expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
    expect(await catalog.listVolumeStates()).toEqual([]);
  });
});

/**
 * The probe is startRestore's own attachment: no job holds it and the driver lists none, so
 * nothing else would ever detach it. Its detach is retried whatever the error (detach is
 * idempotent), and one that still fails is named in the rejection.
 */
describe("a restore's precondition probe whose detach fails with a code the cleanup retries do not cover", () => {
  /**
   * The memory driver, its detach failing `INTERNAL` (not a retryable code), detaching nothing,
   * the next `failures` times once `arm(failures)` is called.
   */
  function failingDetach() {
    const volumes = new MemoryVolumeDriver();
    let failures = 0;
    let failed = 0;
    const driver = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
      detach: async (id: string) => {
        if (failed < failures) {
          failed++;
          throw new CairnError('INTERNAL', 'detach failed', { driver: 'memory' });
        }
        return volumes.detach(id);
      },
    });
    const manager = new BackupManager({ volumes: driver, targets: { mem: new MemoryBackupService('mem') }, catalog: new MemoryCatalog() });
    return { volumes, manager, failed: () => failed, arm: (n: number) => (failures = n) };
  }

  it('failing once, the probe is detached all the same: the restore runs and the volume is left unattached', async () => {
    const { volumes, manager, failed, arm } = failingDetach();
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    arm(1);
    const { job } = await manager.startRestore({ backupId: b.id, volumeId: dst.id });
    await job.done;
    expect(failed()).toBe(1);
    expect((await contents(volumes, dst.id)).equals(await contents(volumes, src.id))).toBe(true);
    // Nothing left attached: a read-write attach is taken.
    await volumes.detach((await volumes.attach({ kind: 'volume', id: dst.id }, 'rw')).id);
  });

  it('failing every time, startRestore rejects with the detach code naming the probe left attached; no job, nothing written', async () => {
    const { volumes, manager, arm } = failingDetach();
    const src = await filledVolume(volumes, MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    arm(Infinity);
    const err = await manager.startRestore({ backupId: b.id, volumeId: dst.id }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'INTERNAL', details: { volumeId: dst.id, attachmentId: expect.any(String) } });
    expect(manager.listJobs()).toEqual([]);
    expect((await manager.getBackup(b.id)).status).toBe('available');
    // The probe named is the attachment that holds the volume: once it goes, the volume is free.
    await expectCode(volumes.attach({ kind: 'volume', id: dst.id }, 'rw'), 'BUSY');
    await volumes.detach((err as { details: { attachmentId: string } }).details.attachmentId);
    expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
    await volumes.detach((await volumes.attach({ kind: 'volume', id: dst.id }, 'rw')).id);
  });
});
