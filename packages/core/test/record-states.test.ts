/**
 * What the manager does with a backup according to its record's status: a delete already in
 * progress is not started again, and verify checks only records whose data is complete.
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, currentOwner, processStartTime, type BackupRecord, type ByteRange, type ProcessOwner } from '../src/index.js';
import { MiB, chunkedRig, expectCode, filledVolume, gate, keys, rig } from './helpers.js';

const me = currentOwner();
/** The parent process: alive, on this host, in this pid namespace. */
const parent = (): ProcessOwner => ({ ...me, pid: process.ppid, startTime: processStartTime(process.ppid) });
/** A pid no process has here (above the kernel's pid limit). */
const NO_SUCH_PID = 2 ** 22 + 4321;

describe('deleteBackup of a backup being deleted', () => {
  it('deleteBackup twice at once: one resolves, the other is CONFLICT (status deleting), and the service deletes the data once', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    const deleteData = service.delete.bind(service);
    const first = gate();
    let calls = 0;
    service.delete = async (backup, options) => {
      if (++calls === 1) await first.arrive();
      return deleteData(backup, options);
    };
    const one = manager.deleteBackup(b.id);
    await first.reached;
    // The first delete is in the service: the record is `deleting`, and a second delete is refused.
    const two = manager.deleteBackup(b.id);
    const refused = await two.then(
      () => undefined,
      (err: unknown) => err,
    );
    first.release();
    await one;
    expect(refused).toMatchObject({ code: 'CONFLICT', details: { backupId: b.id, status: 'deleting' } });
    expect(calls).toBe(1);
    await expectCode(manager.getBackup(b.id), 'NOT_FOUND');
  });

  it('deleteBackup of two at once started together: exactly one resolves, the other is CONFLICT or NOT_FOUND, never a second delete', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    const deleteData = service.delete.bind(service);
    let calls = 0;
    service.delete = async (backup, options) => {
      calls++;
      await new Promise((r) => setTimeout(r, 20));
      return deleteData(backup, options);
    };
    const results = await Promise.allSettled([manager.deleteBackup(b.id), manager.deleteBackup(b.id)]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
    expect(['CONFLICT', 'NOT_FOUND']).toContain(lost.reason.code);
    expect(calls).toBe(1);
    await expectCode(manager.getBackup(b.id), 'NOT_FOUND');
  });

  it('deleteBackup of a record another live process is deleting is CONFLICT and changes nothing', async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    const deleting: BackupRecord = { ...b, status: 'deleting', owner: parent() };
    await catalog.putBackup(deleting);
    let calls = 0;
    const deleteData = service.delete.bind(service);
    service.delete = async (backup, options) => (calls++, deleteData(backup, options));
    await expect(manager.deleteBackup(b.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { backupId: b.id, status: 'deleting' } });
    expect(await manager.getBackup(b.id)).toEqual(deleting);
    expect(calls).toBe(0);
  });

  it('a delete a dead process left deleting is refused by deleteBackup and finished by recover()', async () => {
    const { volumes, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    await catalog.putBackup({ ...b, status: 'deleting', owner: { ...me, pid: NO_SUCH_PID } });
    await expectCode(manager.deleteBackup(b.id), 'CONFLICT');
    expect(await manager.recover()).toMatchObject({ resumedDeletes: [b.id], errors: [] });
    await expectCode(manager.getBackup(b.id), 'NOT_FOUND');
  });

  it('deleteBackup of an error_deleting record retries the delete and removes it', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    const deleteData = service.delete.bind(service);
    service.delete = async () => {
      throw Object.assign(new Error('backend down'), { code: 'ECONNREFUSED' });
    };
    await expectCode(manager.deleteBackup(b.id), 'UNAVAILABLE');
    expect((await manager.getBackup(b.id)).status).toBe('error_deleting');
    service.delete = deleteData;
    await manager.deleteBackup(b.id);
    await expectCode(manager.getBackup(b.id), 'NOT_FOUND');
  });
});

describe('verify(backupId) by record status', () => {
  it('verify(a failed backup, status error, no data) is CONFLICT naming the status, and the service is not asked', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    service.failAfterBytes = 0;
    await expectCode(manager.backup({ volumeId: v.id }), 'INTERNAL');
    const [failed] = await manager.listBackups();
    expect(failed).toMatchObject({ status: 'error' });
    let asked = 0;
    const verify = service.verify.bind(service);
    service.verify = async (backup, options) => (asked++, verify(backup, options));
    await expect(manager.verify(failed!.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { backupId: failed!.id, status: 'error' } });
    expect(asked).toBe(0);
  });

  it('verify(a chunked backup that failed, no manifest) is CONFLICT, not a CORRUPT "no manifest" report', async () => {
    const r = await chunkedRig();
    const v = await filledVolume(r.volumes, MiB);
    const job = await r.manager.startBackup({ volumeId: v.id });
    job.cancel();
    await expectCode(job.done, 'CANCELLED');
    expect((await r.manager.getBackup(job.backupId)).status).toBe('error');
    await expect(r.manager.verify(job.backupId)).rejects.toMatchObject({ code: 'CONFLICT', details: { backupId: job.backupId, status: 'error' } });
  });

  it('verify(a record creating, deleting or error_deleting) is CONFLICT naming the status; available and restoring verify', async () => {
    const { volumes, service, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    for (const status of ['creating', 'deleting', 'error_deleting', 'error'] as const) {
      await catalog.putBackup({ ...b, status, owner: status === 'creating' || status === 'deleting' ? parent() : undefined });
      await expect(manager.verify(b.id)).rejects.toMatchObject({ code: 'CONFLICT', details: { backupId: b.id, status } });
    }
    for (const status of ['available', 'restoring'] as const) {
      await catalog.putBackup({ ...b, status, owner: status === 'restoring' ? parent() : undefined });
      expect(await manager.verify(b.id)).toMatchObject({ checked: [b.id], problems: [] });
    }
    service.corrupt(b.id);
    expect((await manager.verify(b.id)).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT' })]);
  });

  it('resetState(available) of an error backup still checks its data through the service', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB);
    const b = await manager.backup({ volumeId: v.id });
    await manager.resetState(b.id, 'error');
    await expectCode(manager.verify(b.id), 'CONFLICT');
    expect(await manager.resetState(b.id, 'available')).toMatchObject({ status: 'available' });
    expect((await manager.verify(b.id)).problems).toEqual([]);
  });
});

/** A memory store whose next read of `key` (once armed) waits at `held` until released. */
class HeldReadStore extends MemoryObjectStore {
  key: string | undefined;
  held = gate();
  override async get(key: string, range?: ByteRange): Promise<Buffer> {
    if (key === this.key) {
      this.key = undefined;
      await this.held.arrive();
    }
    return super.get(key, range);
  }
}

describe('a backup deleted while a verify reads it', () => {
  it('verify() of every backup leaves it out (not checked, no problem) and still reports the others', async () => {
    const store = new HeldReadStore('mem');
    const r = await chunkedRig(store);
    const kept = await r.manager.backup({ volumeId: (await filledVolume(r.volumes, MiB, 1)).id });
    const gone = await r.manager.backup({ volumeId: (await filledVolume(r.volumes, MiB, 2)).id });
    store.key = `manifests/${gone.id}`;
    const verifying = r.manager.verify();
    await store.held.reached;
    await r.manager.deleteBackup(gone.id);
    store.held.release();
    const report = await verifying;
    expect(report.problems).toEqual([]);
    expect(report.checked).toEqual([kept.id]);
  });

  it('verify(backupId) rejects with NOT_FOUND, as for an unknown backup, instead of reporting it broken', async () => {
    const store = new HeldReadStore('mem');
    const r = await chunkedRig(store);
    const gone = await r.manager.backup({ volumeId: (await filledVolume(r.volumes, MiB, 1)).id });
    store.key = `manifests/${gone.id}`;
    const verifying = r.manager.verify(gone.id);
    await store.held.reached;
    await r.manager.deleteBackup(gone.id);
    store.held.release();
    await expect(verifying).rejects.toMatchObject({ code: 'NOT_FOUND', details: { backupId: gone.id } });
  });

  it('a backup whose data is damaged and whose record stays is still reported broken', async () => {
    const store = new HeldReadStore('mem');
    const r = await chunkedRig(store);
    const b = await r.manager.backup({ volumeId: (await filledVolume(r.volumes, MiB, 1)).id });
    for (const key of await keys(store, 'packs/')) await store.delete(key);
    expect((await r.manager.verify()).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'NOT_FOUND' })]);
    expect((await r.manager.verify(b.id)).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'NOT_FOUND' })]);
  });
});
