import { describe, expect, it } from 'vitest';
import { MiB, expectCode, filledVolume, over } from './helpers.js';
import { ATTACH_RETRY_MS } from '../src/flow/flow-attach.js';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, type Attachment, type VolumeFlowState } from '../src/index.js';

/**
 * A volume that another client (a VM) attaches read-write after the backup job's own check of
 * the volume (available) and before the job's read-only attach refuses that attach `BUSY`. The job
 * judges the volume as the check would now: `CONFLICT` without `force`, through a temporary
 * snapshot with it. A `BUSY` whose volume is no longer in use stays `BUSY`.
 */

/**
 * A manager whose job meets a VM: the VM attaches the volume read-write right after the job has
 * laid its `backing-up` state (after its check, before its attach). `onRefusal(n)` runs at the
 * n-th refusal (1-based) of the job's read-only attach of the volume, before it is rethrown.
 */
function rig(onRefusal?: (n: number, vm: Attachment) => Promise<void>) {
  const volumes = new MemoryVolumeDriver();
  const service = new MemoryBackupService('mem');
  const catalog = new MemoryCatalog();
  let vm: Attachment | undefined;
  let refusals = 0;
  const snapshotsTaken: string[] = [];
  const driver = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
    attach: async (...args: Parameters<MemoryVolumeDriver['attach']>) =>
      volumes.attach(...args).catch(async (err: unknown) => {
        if (args[0].kind === 'volume' && args[1] === 'ro' && vm) {
          refusals++;
          await onRefusal?.(refusals, vm);
        }
        throw err;
      }),
    createSnapshot: async (...args: Parameters<MemoryVolumeDriver['createSnapshot']>) => {
      const s = await volumes.createSnapshot(...args);
      snapshotsTaken.push(s.id);
      return s;
    },
  });
  const hooked = over(catalog, {
    putVolumeState: async (state: VolumeFlowState, o?: { ifAbsent?: boolean }) => {
      await catalog.putVolumeState(state, o);
      if (state.status === 'backing-up' && !vm) vm = await volumes.attach({ kind: 'volume', id: state.volumeId }, 'rw');
    },
  });
  const manager = new BackupManager({ volumes: driver, targets: { mem: service }, catalog: hooked });
  return { volumes, catalog, manager, snapshotsTaken, vm: () => vm, refusals: () => refusals };
}

describe('a volume attached read-write between the backup job’s check and its attach', () => {
  it('fails the job with the CONFLICT of the check (not BUSY) without force: no snapshot, record error, the VM untouched', async () => {
    const { volumes, catalog, manager, snapshotsTaken, vm, refusals } = rig();
    const v = await filledVolume(volumes, MiB);
    const job = await manager.startBackup({ volumeId: v.id });
    await expectCode(job.done, 'CONFLICT');
    expect(refusals()).toBe(ATTACH_RETRY_MS.length + 1);
    expect(snapshotsTaken).toEqual([]);
    expect((await manager.getBackup(job.backupId)).failReason).toMatch(/^CONFLICT/);
    expect(await catalog.listVolumeStates()).toEqual([]);
    expect((await manager.getVolume(v.id)).status).toBe('in-use');
    // The VM's attachment still works.
    await vm()!.device.write(0, Buffer.alloc(4096, 9));
    await volumes.detach(vm()!.id);
    expect((await manager.getVolume(v.id)).status).toBe('available');
    expect(await volumes.changedBlockTracking.listCheckpoints(v.id)).toEqual([]);
  });

  it('with force, copies the volume through a temporary snapshot, as one in use at the check', async () => {
    const { volumes, catalog, manager, snapshotsTaken, vm } = rig();
    const v = await filledVolume(volumes, MiB);
    const job = await manager.startBackup({ volumeId: v.id, force: true });
    const done = await job.done;
    expect(done.status).toBe('available');
    expect(snapshotsTaken).toHaveLength(1);
    expect(await volumes.listSnapshots(v.id)).toEqual([]);
    expect(await catalog.listVolumeStates()).toEqual([]);
    const expected = Buffer.from(await vm()!.device.read(0, v.size));
    await volumes.detach(vm()!.id);
    const { volume } = await manager.restore({ backupId: done.id, newVolume: {} });
    const a = await volumes.attach({ kind: 'volume', id: volume.id }, 'ro');
    expect(Buffer.from(await a.device.read(0, v.size)).equals(expected)).toBe(true);
    await volumes.detach(a.id);
  });

  it('stays BUSY when the read-write attachment is gone by the time the retries ran out (the volume available again)', async () => {
    const { volumes, catalog, manager, snapshotsTaken, refusals } = rig(async (n, vm) => {
      if (n === ATTACH_RETRY_MS.length + 1) await volumes.detach(vm.id);
    });
    const v = await filledVolume(volumes, MiB);
    const job = await manager.startBackup({ volumeId: v.id, force: true });
    await expectCode(job.done, 'BUSY');
    expect(refusals()).toBe(ATTACH_RETRY_MS.length + 1);
    expect(snapshotsTaken).toEqual([]);
    expect((await manager.getBackup(job.backupId)).failReason).toMatch(/^BUSY/);
    expect(await catalog.listVolumeStates()).toEqual([]);
    expect((await manager.getVolume(v.id)).status).toBe('available');
  });
});
