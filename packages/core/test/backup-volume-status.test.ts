import { describe, expect, it } from 'vitest';
import { MiB, expectCode, filledVolume, ScriptedService } from './helpers.js';
import { BackupManager, InProcessVolumeLocks, MemoryCatalog, MemoryVolumeDriver, type Volume } from '../src/index.js';

/**
 * The memory driver, except that the volumes in `failed` are reported `error`, as a driver reports
 * a volume whose backend failed (DriverVolumeStatus): no driver here can be made to fail so.
 */
class FailingVolumes extends MemoryVolumeDriver {
  readonly failed = new Set<string>();

  override async getVolume(volumeId: string): Promise<Volume> {
    const v = await super.getVolume(volumeId);
    return this.failed.has(v.id) ? { ...v, status: 'error' } : v;
  }
}

function errorRig() {
  const volumes = new FailingVolumes();
  const locks = new InProcessVolumeLocks();
  const manager = new BackupManager({ volumes, targets: { scripted: new ScriptedService() }, catalog: new MemoryCatalog(), locks });
  return { volumes, locks, manager };
}

describe('backup of a volume by driver status (Cinder: only available or in-use)', () => {
  it('a volume the driver reports `error` is refused with CONFLICT (details.volumeStatus), with or without force, and nothing is recorded', async () => {
    const { volumes, manager } = errorRig();
    const v = await filledVolume(volumes, 2 * MiB);
    volumes.failed.add(v.id);
    for (const force of [false, true]) {
      const err = await manager.startBackup({ volumeId: v.id, force }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'CONFLICT', details: { volumeId: v.id, volumeStatus: 'error' } });
    }
    expect(await manager.listBackups()).toEqual([]);
  });

  it('a volume that goes `error` while its backup waits for it fails the job with CONFLICT before anything is read: the record is `error`, the volume in no flow', async () => {
    const { volumes, locks, manager } = errorRig();
    const v = await filledVolume(volumes, 2 * MiB);
    // Another flow holds the volume: the backup waits for it.
    const release = await locks.acquire(v.id);
    const job = await manager.startBackup({ volumeId: v.id });
    volumes.failed.add(v.id);
    await release();
    await expectCode(job.done, 'CONFLICT');
    const [record] = await manager.listBackups();
    expect(record).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^CONFLICT: .*is error/) });
    expect(record!.stats).toBeUndefined();
    volumes.failed.delete(v.id);
    expect((await manager.getVolume(v.id)).status).toBe('available');
    // The volume, once the driver reports it available again, is backed up as usual.
    expect((await manager.backup({ volumeId: v.id })).status).toBe('available');
  });
});
