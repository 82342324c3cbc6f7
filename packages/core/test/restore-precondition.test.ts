import { describe, expect, it } from 'vitest';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type VolumeFlowState, type VolumeLocks } from '../src/index.js';
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
