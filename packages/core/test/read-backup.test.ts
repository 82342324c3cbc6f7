import { describe, expect, it } from 'vitest';
import { BackupManager, RepositoryCatalog, type BackupRecord } from '../src/index.js';
import { chunkedRig, contents, expectCode, filledVolume, gate, MiB } from './helpers.js';

/**
 * BackupManager.readBackup: a read of a backup under a restore's protection, without a volume of
 * the manager's. A real chunked repository (memory object store) and its catalog; a second manager
 * over the same catalog stands for another process.
 */
describe('BackupManager.readBackup', () => {
  async function setup() {
    const rig = await chunkedRig();
    const source = await filledVolume(rig.volumes, 4 * MiB, 7);
    const backup = await rig.manager.backup({ volumeId: source.id });
    const other = new BackupManager({ volumes: rig.volumes, targets: { repo: rig.service }, catalog: new RepositoryCatalog(rig.service.repository) });
    return { ...rig, source, backup, other };
  }

  /** Restores `backup` through `service` into a new memory volume of `rig` and returns its bytes. */
  async function readThrough(rig: Awaited<ReturnType<typeof setup>>, backup: BackupRecord): Promise<Buffer> {
    const v = await rig.volumes.createVolume({ size: backup.size, name: 'scratch' });
    const a = await rig.volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    try {
      await rig.service.restore(backup, a.device, { targetIsZeroed: true });
    } finally {
      await rig.volumes.detach(a.id);
    }
    return contents(rig.volumes, v.id);
  }

  it('while the callback runs, the record stays restoring, deletes here and elsewhere are CONFLICT, gc keeps its data; released on success', async () => {
    const rig = await setup();
    const { manager, other, backup } = rig;
    const g = gate();
    const reading = manager.readBackup(backup.id, async (claimed, service) => {
      expect(service).toBe(rig.service);
      expect(claimed).toMatchObject({ id: backup.id, status: 'restoring' });
      await g.arrive();
      return readThrough(rig, claimed);
    });
    await g.reached;
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'restoring' });
    for (const m of [manager, other]) {
      await expect(m.deleteBackup(backup.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { backupId: backup.id, status: 'restoring' } });
    }
    await rig.service.gc({ graceMs: 0 });
    g.release();
    // The data read after the refused deletes and the gc is the backup, whole.
    expect((await reading).equals(await contents(rig.volumes, rig.source.id))).toBe(true);
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'available' });
    expect((await manager.getBackup(backup.id)).owner).toBeUndefined();
    await other.deleteBackup(backup.id);
    await expectCode(manager.getBackup(backup.id), 'NOT_FOUND');
  });

  it('shares the claim with restores and other reads of this manager: the backup is available again only after the last ends', async () => {
    const rig = await setup();
    const { manager, other, backup } = rig;
    const g1 = gate();
    const first = manager.readBackup(backup.id, () => g1.arrive());
    await g1.reached;
    // A restore and a second read of the restoring backup run meanwhile.
    const restored = await manager.restore({ backupId: backup.id, newVolume: { name: 'copy' } });
    expect((await contents(rig.volumes, restored.volume.id)).equals(await contents(rig.volumes, rig.source.id))).toBe(true);
    expect(await manager.readBackup(backup.id, async (b) => b.status)).toBe('restoring');
    // Both ended; the first read still runs.
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'restoring' });
    await expectCode(other.deleteBackup(backup.id), 'CONFLICT');
    // Another manager (another process) finds it restoring by someone else: refused, as a restore is.
    await expectCode(other.readBackup(backup.id, async () => undefined), 'CONFLICT');
    g1.release();
    await first;
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'available' });
  });

  it('a callback that fails: its error as a CairnError, and the claim is released', async () => {
    const rig = await setup();
    const { manager, backup } = rig;
    await expect(manager.readBackup(backup.id, async () => Promise.reject(new Error('reader exploded')))).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('reader exploded') });
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'available' });
    await manager.deleteBackup(backup.id);
  });

  it('cancelled while the callback runs: CANCELLED, and the claim is released; cancelled before: nothing is claimed', async () => {
    const rig = await setup();
    const { manager, backup } = rig;
    const controller = new AbortController();
    const g = gate();
    const reading = manager.readBackup(
      backup.id,
      async () => {
        await g.arrive();
        // A reader that gives up with an error of its own once the signal fires.
        throw new Error('stopped reading');
      },
      { signal: controller.signal },
    );
    await g.reached;
    controller.abort();
    g.release();
    await expectCode(reading, 'CANCELLED');
    const after = await manager.getBackup(backup.id);
    expect(after).toMatchObject({ status: 'available' });

    let ran = false;
    await expectCode(
      manager.readBackup(backup.id, async () => void (ran = true), { signal: controller.signal }),
      'CANCELLED',
    );
    expect(ran).toBe(false);
    expect(await manager.getBackup(backup.id)).toEqual(after); // not even written
    await manager.deleteBackup(backup.id);
  });

  it('checks as a restore does: NOT_FOUND for an unknown backup, CONFLICT for one that is not available', async () => {
    const rig = await setup();
    const { manager, backup } = rig;
    let ran = false;
    await expectCode(manager.readBackup('nope', async () => void (ran = true)), 'NOT_FOUND');
    await manager.resetState(backup.id, 'error');
    await expectCode(manager.readBackup(backup.id, async () => void (ran = true)), 'CONFLICT');
    expect(ran).toBe(false);
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'error' });
  });
});
