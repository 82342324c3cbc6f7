import { describe, expect, it } from 'vitest';
import { MiB, contents, expectCode, filledVolume } from './helpers.js';
import { BackupManager, InProcessVolumeLocks, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver } from '../src/index.js';

// Each test fails on the code before its fix.

function rig() {
  const volumes = new MemoryVolumeDriver();
  const service = new MemoryBackupService();
  const catalog = new MemoryCatalog();
  const locks = new InProcessVolumeLocks();
  const manager = new BackupManager({ volumes, targets: { memory: service }, catalog, locks });
  return { volumes, service, catalog, locks, manager };
}

describe('a queued backup re-checks the volume once it holds it', () => {
  it('a volume attached read-write meanwhile is CONFLICT without force: no snapshot taken, no data read, record error', async () => {
    const { volumes, manager, locks } = rig();
    const v = await filledVolume(volumes, MiB);
    // Another flow (another process's, through shared locks) holds the volume meanwhile.
    const hold = await locks.acquire(v.id);
    const job = await manager.startBackup({ volumeId: v.id });
    // The volume's user attaches it read-write while the backup waits: it is in use now.
    const user = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    const snapshotsTaken: string[] = [];
    const createSnapshot = volumes.createSnapshot.bind(volumes);
    volumes.createSnapshot = async (id, name) => {
      const s = await createSnapshot(id, name);
      snapshotsTaken.push(s.id);
      return s;
    };
    await hold();
    await expectCode(job.done, 'CONFLICT');
    expect(snapshotsTaken).toEqual([]);
    expect(await manager.getBackup(job.backupId)).toMatchObject({ status: 'error' });
    expect((await manager.getBackup(job.backupId)).failReason).toMatch(/^CONFLICT/);
    expect((await manager.getVolume(v.id)).status).toBe('in-use');
    await volumes.detach(user.id);
    expect((await manager.getVolume(v.id)).status).toBe('available');
    expect(await volumes.changedBlockTracking.listCheckpoints(v.id)).toEqual([]);
    // With force, the same queued situation backs up through a temporary snapshot.
    const hold2 = await locks.acquire(v.id);
    const forced = await manager.startBackup({ volumeId: v.id, force: true });
    const user2 = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    const expected = await user2.device.read(0, v.size);
    await hold2();
    expect((await forced.done).status).toBe('available');
    expect(snapshotsTaken).toHaveLength(1);
    await volumes.detach(user2.id);
    const { volume } = await manager.restore({ backupId: forced.backupId, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(Buffer.from(expected))).toBe(true);
  });
});

describe('deleteBackup with cascade on a dependent-chain target', () => {
  it('deletes a child in error too: one whose data the target still holds (reset to error), records and data gone', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const full = await manager.backup({ volumeId: v.id });
    const inc = await manager.backup({ volumeId: v.id, incremental: true });
    // An administrator marks the incremental failed; its data stays in the target, built on `full`.
    await manager.resetState(inc.id, 'error');
    await manager.deleteBackup(full.id, { cascade: true });
    expect(await manager.listBackups()).toEqual([]);
    expect((await service.verify()).checked).toEqual([]);
  });

  it('leaves no error child behind naming the deleted parent', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const full = await manager.backup({ volumeId: v.id });
    const backup = service.backup.bind(service);
    service.backup = async () => {
      throw new Error('target went away');
    };
    await expectCode(manager.backup({ volumeId: v.id, incremental: true }), 'INTERNAL');
    service.backup = backup;
    const [failed] = (await manager.listBackups()).filter((b) => b.status === 'error');
    expect(failed).toMatchObject({ parentId: full.id });
    await manager.deleteBackup(full.id, { cascade: true });
    expect(await manager.listBackups()).toEqual([]);
  });
});

describe('deleteBackup that the target refuses', () => {
  it('a CONFLICT from the service (a child in error whose data builds on it) changes nothing: the backup stays available and restorable', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const expected = await contents(volumes, v.id);
    const full = await manager.backup({ volumeId: v.id });
    const inc = await manager.backup({ volumeId: v.id, incremental: true });
    await manager.resetState(inc.id, 'error');
    await expectCode(manager.deleteBackup(full.id), 'CONFLICT');
    expect((await manager.getBackup(full.id)).status).toBe('available');
    const { volume } = await manager.restore({ backupId: full.id, newVolume: {} });
    expect((await contents(volumes, volume.id)).equals(expected)).toBe(true);
    // Once the child is gone, the delete goes through.
    await manager.deleteBackup(inc.id);
    await manager.deleteBackup(full.id);
    expect(await manager.listBackups()).toEqual([]);
  });
});

describe('startRestore input', () => {
  it('a request naming neither a volume nor a new volume is INVALID_INPUT, a CairnError, and creates nothing', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    const before = (await volumes.listVolumes()).length;
    await expectCode(manager.startRestore({ backupId: b.id } as never), 'INVALID_INPUT');
    await expectCode(manager.startRestore({ backupId: b.id, newVolume: null } as never), 'INVALID_INPUT');
    expect((await volumes.listVolumes()).length).toBe(before);
  });
});
