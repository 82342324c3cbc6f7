import { describe, expect, it } from 'vitest';
import { MiB, contents, expectCode, filledVolume, rig } from './helpers.js';
import { MemoryVolumeDriver, type BackupJob, type BackupSource } from '../src/index.js';

/**
 * The memory driver keeps a read-only attachment of a volume from being written under it, as the
 * file driver's locks do: a backup of an available volume reads it as it was when the copy began.
 */
describe('MemoryVolumeDriver attachments of a volume: one read-write or any number of read-only', () => {
  it('a rw attach next to ro attachments, and a ro attach next to a rw one, fail with BUSY; snapshots stay readable', async () => {
    const volumes = new MemoryVolumeDriver();
    const v = await filledVolume(volumes, MiB);
    const r1 = await volumes.attach({ kind: 'volume', id: v.id }, 'ro');
    const r2 = await volumes.attach({ kind: 'volume', id: v.id }, 'ro');
    await expectCode(volumes.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY');
    expect((await volumes.getVolume(v.id)).status).toBe('available');
    await volumes.detach(r1.id);
    await expectCode(volumes.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY');
    await volumes.detach(r2.id);
    const rw = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await expectCode(volumes.attach({ kind: 'volume', id: v.id }, 'ro'), 'BUSY');
    const snap = await volumes.createSnapshot(v.id);
    const s = await volumes.attach({ kind: 'snapshot', id: snap.id }, 'ro');
    await volumes.detach(s.id);
    await volumes.detach(rw.id);
    await volumes.deleteSnapshot(snap.id);
    await volumes.detach((await volumes.attach({ kind: 'volume', id: v.id }, 'ro')).id);
  });
});

describe('MemoryVolumeDriver: a backup of an available volume is point-in-time', () => {
  it('a writer attaching while the copy runs is refused with BUSY, and the backup holds the volume as it was', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, 2 * MiB);
    const before = await contents(volumes, v.id);
    let copying!: () => void;
    let proceed!: () => void;
    const reached = new Promise<void>((r) => (copying = r));
    const go = new Promise<void>((r) => (proceed = r));
    const backup = service.backup.bind(service);
    service.backup = async (job: BackupJob, source: BackupSource) => {
      copying();
      await go;
      return backup(job, source);
    };
    const job = await manager.startBackup({ volumeId: v.id });
    await reached;
    const writer = volumes.attach({ kind: 'volume', id: v.id }, 'rw').then(async (a) => {
      await a.device.write(0, Buffer.alloc(MiB, 0xab));
      await volumes.detach(a.id);
    });
    await expectCode(writer, 'BUSY');
    proceed();
    const b = await job.done;
    const { volume } = await manager.restore({ backupId: b.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(before)).toBe(true);
    // Once the backup has detached, the volume can be written again.
    const rw = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    await volumes.detach(rw.id);
  });
});

describe('a restore onto a volume that someone reads', () => {
  it('is refused with BUSY and leaves the volume as it was: not error_restoring, the backup available', async () => {
    const { volumes, manager } = rig();
    const src = await filledVolume(volumes, 2 * MiB, 1);
    const b = await manager.backup({ volumeId: src.id });
    const dst = await filledVolume(volumes, 2 * MiB, 2);
    const before = await contents(volumes, dst.id);
    const reader = await volumes.attach({ kind: 'volume', id: dst.id }, 'ro');
    await expectCode(manager.restore({ backupId: b.id, volumeId: dst.id }), 'BUSY');
    expect((await manager.getVolume(dst.id)).status).toBe('available');
    expect((await manager.getBackup(b.id)).status).toBe('available');
    expect(Buffer.from(await reader.device.read(0, reader.device.size)).equals(before)).toBe(true);
    await volumes.detach(reader.id);
    await manager.restore({ backupId: b.id, volumeId: dst.id });
    expect((await contents(volumes, dst.id)).equals(await contents(volumes, src.id))).toBe(true);
  });
});
