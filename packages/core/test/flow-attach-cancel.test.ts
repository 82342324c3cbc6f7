/**
 * A flow's attach refused BUSY is retried (flow-attach.ts), but never once the flow's signal has
 * fired: a cancel that comes while a retry waits makes no further attach (a read-write one would
 * hold the volume for nothing, and another flow's attach then fails for it).
 */
import { describe, expect, it } from 'vitest';
import { attachForFlow } from '../src/flow/flow-attach.js';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver } from '../src/index.js';
import { contents, expectCode, filledVolume, gate, MiB, over } from './helpers.js';

/** `volumes`, counting the attaches the driver refuses; `refused` resolves at the first. */
function countingRefusals(volumes: MemoryVolumeDriver) {
  const refusal = gate();
  const refusals = { count: 0 };
  const driver = Object.assign(Object.create(volumes) as MemoryVolumeDriver, {
    attach: async (...args: Parameters<MemoryVolumeDriver['attach']>) =>
      volumes.attach(...args).catch((err: unknown) => {
        refusals.count++;
        void refusal.arrive();
        throw err;
      }),
  });
  // Resolves once the refusal has reached attachForFlow, which then waits to retry.
  const refused = refusal.reached.then(() => new Promise<void>((r) => setImmediate(r)));
  return { driver, refusals, refused };
}

describe('attachForFlow cancelled while it waits to retry a BUSY refusal', () => {
  it('makes no further attach and rejects with the refusal', async () => {
    const volumes = new MemoryVolumeDriver();
    const v = await filledVolume(volumes, MiB);
    // Someone else holds the volume read-write: the driver refuses every other attach BUSY.
    const held = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    const { driver, refusals, refused } = countingRefusals(volumes);
    const controller = new AbortController();
    const attaching = attachForFlow(driver, { kind: 'volume', id: v.id }, 'rw', controller.signal);
    await refused;
    controller.abort();
    await expectCode(attaching, 'BUSY');
    expect(refusals.count).toBe(1);
    await volumes.detach(held.id);
  });

  it("a restore job cancelled then ends CANCELLED with its one refused attach, the volume and the backup as they were", async () => {
    const volumes = new MemoryVolumeDriver();
    const shared = new MemoryCatalog();
    const service = new MemoryBackupService('mem');
    const setup = new BackupManager({ volumes, targets: { mem: service }, catalog: shared });
    const backup = await setup.backup({ volumeId: (await filledVolume(volumes, MiB, 1)).id });
    const dst = await filledVolume(volumes, MiB, 2);
    const before = await contents(volumes, dst.id);
    // The job's claim of the backup waits until someone else has attached the volume read-only
    // (it stays `available`): the job's read-write attach is then refused BUSY.
    const claim = gate();
    const catalog = over(shared, { putBackup: async (r, o) => (r.status === 'restoring' ? await claim.arrive() : undefined, shared.putBackup(r, o)) });
    const { driver, refusals, refused } = countingRefusals(volumes);
    const manager = new BackupManager({ volumes: driver, targets: { mem: service }, catalog });
    const { job } = await manager.startRestore({ backupId: backup.id, volumeId: dst.id });
    await claim.reached;
    const reader = await volumes.attach({ kind: 'volume', id: dst.id }, 'ro');
    claim.release();
    await refused;
    job.cancel();
    await expectCode(job.done, 'CANCELLED');
    expect(refusals.count).toBe(1);
    await volumes.detach(reader.id);
    expect((await contents(volumes, dst.id)).equals(before)).toBe(true);
    expect(await shared.listVolumeStates()).toEqual([]);
    expect((await shared.getBackup(backup.id)).status).toBe('available');
  });
});
