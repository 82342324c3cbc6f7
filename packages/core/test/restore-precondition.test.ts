import { describe, expect, it } from 'vitest';
import { BackupManager, MemoryCatalog, MemoryVolumeDriver, type VolumeLocks } from '../src/index.js';
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
