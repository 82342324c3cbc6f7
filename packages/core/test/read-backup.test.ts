import { hostname } from 'node:os';
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

  it('shares the claim with restores and other reads, of this manager and of others: the backup is available again only after the last ends', async () => {
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
    // Another manager (as another process would) reads it too, as one more of its readers; its
    // end leaves the backup restoring while the first read runs.
    const g2 = gate();
    const second = other.readBackup(backup.id, async (b) => {
      await g2.arrive();
      return b.readers?.length;
    });
    // Its refusal (as before readers) fails the test at once rather than leaving it waiting.
    await Promise.race([g2.reached, second]);
    expect((await manager.getBackup(backup.id)).readers).toHaveLength(2);
    g2.release();
    expect(await second).toBe(2);
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'restoring' });
    expect((await manager.getBackup(backup.id)).readers).toHaveLength(1);
    await expectCode(other.deleteBackup(backup.id), 'CONFLICT');
    g1.release();
    await first;
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'available' });
    expect((await manager.getBackup(backup.id)).readers).toBeUndefined();
  });

  it('readers left on a record that is not restoring (carried over by an older Cairn\'s reset, an imported record) are not joined: the read is the only reader, and available after it', async () => {
    const rig = await setup();
    const { manager, backup } = rig;
    const stale: BackupRecord = { ...backup, readers: [{ id: 'other-manager', owner: { host: hostname(), pid: process.ppid }, since: backup.createdAt }] };
    const catalog = new RepositoryCatalog(rig.service.repository);
    await catalog.section(backup.id, () => catalog.putBackup(stale));
    const during = await manager.readBackup(backup.id, async () => manager.getBackup(backup.id));
    expect(during.status).toBe('restoring');
    expect(during.readers?.map((r) => r.owner.pid)).toEqual([process.pid]);
    const after = await manager.getBackup(backup.id);
    expect(after.status).toBe('available');
    expect(after.readers).toBeUndefined();
  });

  it('a backup restoring by an older Cairn (an owner, no readers: it would end it regardless of others) is not joined: CONFLICT, record untouched', async () => {
    const rig = await setup();
    const { manager, backup } = rig;
    // The parent process: alive, and another process of this host.
    const legacy: BackupRecord = { ...backup, status: 'restoring', owner: { host: hostname(), pid: process.ppid }, updatedAt: new Date().toISOString() };
    const catalog = new RepositoryCatalog(rig.service.repository);
    await catalog.section(backup.id, () => catalog.putBackup(legacy));
    let ran = false;
    await expectCode(manager.readBackup(backup.id, async () => void (ran = true)), 'CONFLICT');
    await expectCode(manager.startRestore({ backupId: backup.id, newVolume: {} }), 'CONFLICT');
    expect(ran).toBe(false);
    expect(await manager.getBackup(backup.id)).toEqual(legacy);
  });

  it('a record exported while it is read (service.exportRecord of the claimed record), or available with readers an older Cairn left, does not carry its readers nor its owner', async () => {
    const rig = await setup();
    const { manager, other, backup } = rig;
    /** The record an exported document holds. */
    const docRecord = (exported: string): Record<string, unknown> => JSON.parse(Buffer.from(exported, 'base64').toString('utf8')).record;
    const g = gate();
    const first = other.readBackup(backup.id, () => g.arrive());
    await Promise.race([g.reached, first]);
    const exported = await manager.readBackup(backup.id, async (claimed, service) => {
      expect(claimed.readers).toHaveLength(2);
      return service.exportRecord(claimed);
    });
    g.release();
    await first;
    const doc = docRecord(exported);
    expect(doc).toMatchObject({ id: backup.id, status: 'available' });
    expect(doc).not.toHaveProperty('readers');
    expect(doc).not.toHaveProperty('owner');

    // An older Cairn's end of a read (or its reset) keeps the readers on the available record.
    const stale: BackupRecord = { ...(await manager.getBackup(backup.id)), readers: [{ id: 'gone', owner: { host: hostname(), pid: process.ppid }, since: backup.createdAt }] };
    const catalog = new RepositoryCatalog(rig.service.repository);
    await catalog.section(backup.id, () => catalog.putBackup(stale));
    const viaManager = docRecord((await manager.exportRecord(backup.id)).record);
    expect(viaManager).toMatchObject({ id: backup.id, status: 'available' });
    expect(viaManager).not.toHaveProperty('readers');
  });

  it("a manager whose entry a reset elsewhere dropped while it reads writes it again at its next claim: another reader's end leaves the backup restoring, not deletable", async () => {
    const rig = await setup();
    const { manager, other, backup } = rig;
    const g1 = gate();
    const first = manager.readBackup(backup.id, () => g1.arrive());
    await Promise.race([g1.reached, first]);
    // An administrator's reset on another host (whose process, as it asserts, is gone; recovery
    // and resetState here leave a live read alone): available, neither owner nor readers.
    const catalog = new RepositoryCatalog(rig.service.repository);
    await catalog.section(backup.id, async () => {
      const current = await catalog.getBackup(backup.id);
      await catalog.putBackup({ ...current, status: 'available', owner: undefined, readers: undefined, updatedAt: new Date().toISOString() });
    });
    // Another process's read, then a second read of this manager.
    const g2 = gate();
    const second = other.readBackup(backup.id, () => g2.arrive());
    await Promise.race([g2.reached, second]);
    const g3 = gate();
    const third = manager.readBackup(backup.id, () => g3.arrive());
    await Promise.race([g3.reached, third]);
    expect((await manager.getBackup(backup.id)).readers).toHaveLength(2);
    g2.release();
    await second;
    expect(await manager.getBackup(backup.id), 'this manager still reads it').toMatchObject({ status: 'restoring' });
    await expectCode(other.deleteBackup(backup.id), 'CONFLICT');
    g3.release();
    g1.release();
    await Promise.all([first, third]);
    expect(await manager.getBackup(backup.id)).toMatchObject({ status: 'available' });
    expect((await manager.getBackup(backup.id)).readers).toBeUndefined();
  });

  it('a backup an older Cairn restores while its record still carries readers from before (it keeps fields it does not know) is not joined, and recovery leaves that live restore alone', async () => {
    const rig = await setup();
    const { manager, backup } = rig;
    const catalog = new RepositoryCatalog(rig.service.repository);
    // A reader whose process is gone, left on the available record (an older Cairn's recovery of it).
    const dead = { id: 'gone', owner: { host: hostname(), pid: 2 ** 22 + 1 }, since: backup.createdAt };
    // Then an older Cairn's restore in a live process of this host (the parent): its owner, the readers kept.
    const legacy: BackupRecord = { ...backup, status: 'restoring', owner: { host: hostname(), pid: process.ppid }, readers: [dead], updatedAt: new Date().toISOString() };
    await catalog.section(backup.id, () => catalog.putBackup(legacy));
    let ran = false;
    await expectCode(manager.readBackup(backup.id, async () => void (ran = true)), 'CONFLICT');
    await expectCode(manager.startRestore({ backupId: backup.id, newVolume: {} }), 'CONFLICT');
    expect(ran).toBe(false);
    const report = await manager.recover();
    expect(report.restoredBackups).toEqual([]);
    expect(report.skipped).toContain(backup.id);
    expect(await manager.getBackup(backup.id)).toEqual(legacy);
    await expectCode(manager.deleteBackup(backup.id), 'CONFLICT');
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
