// A backup of an in-use volume (force) through a driver that can quiesce: the guest is frozen
// around the temporary snapshot only, and a failure of either step leaves no snapshot behind.
import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver } from '../src/index.js';

/** A memory driver declaring quiesce, logging each freeze, thaw and snapshot. */
function quiescingDriver(fail: { freeze?: boolean; thaw?: boolean } = {}) {
  const volumes = new MemoryVolumeDriver();
  const log: string[] = [];
  Object.defineProperty(volumes, 'capabilities', { value: { ...volumes.capabilities, quiesce: true } });
  const createSnapshot = volumes.createSnapshot.bind(volumes);
  volumes.createSnapshot = async (volumeId, name) => {
    log.push(`snapshot ${name ?? ''}`.trim());
    return createSnapshot(volumeId, name);
  };
  Object.defineProperty(volumes, 'quiesce', {
    value: {
      freeze: async (id: string) => {
        log.push(`freeze ${id}`);
        if (fail.freeze) throw new CairnError('UNAVAILABLE', 'guest agent does not answer', { driver: 'memory' });
      },
      thaw: async (id: string) => {
        log.push(`thaw ${id}`);
        if (fail.thaw) throw new CairnError('UNAVAILABLE', 'guest agent went away', { driver: 'memory' });
      },
    },
  });
  return { volumes, log };
}

async function inUse(fail: { freeze?: boolean; thaw?: boolean } = {}) {
  const { volumes, log } = quiescingDriver(fail);
  const manager = new BackupManager({ volumes, targets: { memory: new MemoryBackupService() }, catalog: new MemoryCatalog() });
  const v = await volumes.createVolume({ size: 1 << 20, name: 'vm-disk' });
  const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
  await a.device.write(0, Buffer.alloc(4096, 1));
  return { volumes, log, manager, v, a };
}

describe('a forced backup of an in-use volume through a driver that quiesces', () => {
  it('freezes right before the temporary snapshot and thaws right after it, then deletes the snapshot', async () => {
    const { volumes, log, manager, v } = await inUse();
    const b = await manager.backup({ volumeId: v.id, force: true });
    expect(b.status).toBe('available');
    expect(log).toEqual([`freeze ${v.id}`, `snapshot cairn-temp-${b.id}`, `thaw ${v.id}`]);
    expect(await volumes.listSnapshots(v.id)).toEqual([]);
  });

  it('fails with the thaw’s error when the thaw fails, and leaves no snapshot behind', async () => {
    const { volumes, log, manager, v, a } = await inUse({ thaw: true });
    await expect(manager.backup({ volumeId: v.id, force: true })).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('guest agent went away') });
    expect(log.map((l) => l.split(' ')[0])).toEqual(['freeze', 'snapshot', 'thaw']);
    expect(await volumes.listSnapshots(v.id)).toEqual([]);
    expect(await volumes.changedBlockTracking!.listCheckpoints(v.id)).toEqual([]);
    await volumes.detach(a.id);
    await manager.deleteVolume(v.id); // no temporary snapshot keeps it
    expect((await volumes.listVolumes()).map((x) => x.id)).not.toContain(v.id);
  });

  it('takes no snapshot when the freeze fails', async () => {
    const { volumes, log, manager, v } = await inUse({ freeze: true });
    await expect(manager.backup({ volumeId: v.id, force: true })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(log).toEqual([`freeze ${v.id}`]);
    expect(await volumes.listSnapshots(v.id)).toEqual([]);
  });
});
