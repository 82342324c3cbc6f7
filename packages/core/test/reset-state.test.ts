/**
 * resetState(): Cinder's backup-reset-state. The way out for a record stuck in a flow status whose
 * owner recovery cannot judge (another host, another container on this host) and that is gone
 * for good; refused while a job that may be running holds it.
 */
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import {
  BackupManager,
  RepositoryCatalog,
  TEMP_SNAPSHOT_PREFIX,
  currentOwner,
  processStartTime,
  type BackupRecord,
  type BackupService,
  type ProcessOwner,
  type VolumeDriver,
} from '../src/index.js';
import { MiB, chunkedRig, contents, expectCode, filledVolume, keys, over, rig } from './helpers.js';

const me = currentOwner();
/** A process of another container under this host name (`--network host`): recovery cannot judge it. */
const otherContainer: ProcessOwner = { ...me, pid: 4242, pidNamespace: me.pidNamespace! + 1 };
/** The parent process: alive, on this host, in this pid namespace. */
const parent = (): ProcessOwner => ({ ...me, pid: process.ppid, startTime: processStartTime(process.ppid) });
/** A pid no process has here (above the kernel's pid limit). */
const NO_SUCH_PID = 2 ** 22 + 4321;

type Chunked = Awaited<ReturnType<typeof chunkedRig>>;

/**
 * Runs a backup of `volumeId` as a process of another container does until it dies: its records
 * name that process, and nothing it would write after the copy reaches the catalog or the volume
 * (final record, cleared volume state, deleted temporary snapshot). `commit`: it dies once the
 * repository has committed the backup (the manifest is whole), else during the copy.
 */
async function backupThatDied(r: Chunked, volumeId: string, options: { commit: boolean; force?: boolean }): Promise<string> {
  const catalog = new RepositoryCatalog(r.service.repository);
  const dying = over(catalog, {
    putBackup: async (record, o) => (record.status === 'creating' ? catalog.putBackup({ ...record, owner: otherContainer }, o) : undefined),
    clearVolumeState: async () => {},
  });
  const service = Object.assign(Object.create(r.service) as BackupService, {
    backup: options.commit ? r.service.backup.bind(r.service) : async () => Promise.reject(new Error('killed')),
  });
  const volumes = Object.assign(Object.create(r.volumes) as VolumeDriver, { deleteSnapshot: async () => {} });
  const other = new BackupManager({ volumes, targets: { repo: service }, catalog: dying });
  const job = await other.startBackup({ volumeId, force: options.force });
  await job.done.catch(() => {});
  return job.backupId;
}

describe('resetState(): a record whose owner is gone for good', () => {
  it('resetState(error) of a backup another container left creating: record error, volume state and temporary snapshot gone, the volume backs up again', async () => {
    const r = await chunkedRig();
    const v = await filledVolume(r.volumes, MiB, 1);
    await r.volumes.attach({ kind: 'volume', id: v.id }, 'rw'); // in use: the backup takes a temporary snapshot
    const id = await backupThatDied(r, v.id, { commit: false, force: true });
    // Stuck: recovery may not touch it, and the volume cannot be backed up.
    expect((await r.manager.recover()).skipped).toEqual([id]);
    expect(await r.manager.getBackup(id)).toMatchObject({ status: 'creating', owner: otherContainer });
    expect((await r.manager.getVolume(v.id)).status).toBe('backing-up');
    expect((await r.volumes.listSnapshots(v.id)).map((s) => s.name)).toEqual([`${TEMP_SNAPSHOT_PREFIX}${id}`]);
    await expectCode(r.manager.backup({ volumeId: v.id, force: true }), 'CONFLICT');

    const reset = await r.manager.resetState(id, 'error');
    expect(reset).toMatchObject({ id, status: 'error', owner: undefined, failReason: expect.stringContaining('reset') });
    expect(await r.manager.getBackup(id)).toEqual(reset);
    expect((await r.manager.getVolume(v.id)).status).toBe('in-use');
    expect(await r.volumes.listSnapshots(v.id)).toEqual([]);
    expect(await r.manager.backup({ volumeId: v.id, force: true })).toMatchObject({ status: 'available' });
    expect(await r.manager.recover()).toMatchObject({ skipped: [], failedBackups: [] });
  });

  it('resetState(available) of a backup another container committed but never recorded: available once verified, and it restores byte-exact', async () => {
    const r = await chunkedRig();
    const v = await filledVolume(r.volumes, MiB, 2);
    const id = await backupThatDied(r, v.id, { commit: true });
    expect((await r.manager.getBackup(id)).status).toBe('creating');
    expect((await r.manager.getVolume(v.id)).status).toBe('backing-up');
    const progress: number[] = [];
    const reset = await r.manager.resetState(id, 'available', { progress: (done) => progress.push(done) });
    expect(reset).toMatchObject({ id, status: 'available', owner: undefined, failReason: undefined });
    expect(progress.at(-1)).toBeGreaterThan(0);
    expect((await r.manager.getVolume(v.id)).status).toBe('available');
    const { volume } = await r.manager.restore({ backupId: id, newVolume: {} });
    expect((await contents(r.volumes, volume.id)).equals(await contents(r.volumes, v.id))).toBe(true);
  });

  it('resetState(available) of a backup whose data is not whole is refused (NOT_FOUND: no manifest, or chunks missing) and leaves it error', async () => {
    const r = await chunkedRig();
    const v = await filledVolume(r.volumes, MiB, 3);
    // Died during the copy: no manifest.
    const partial = await backupThatDied(r, v.id, { commit: false });
    await expect(r.manager.resetState(partial, 'available')).rejects.toMatchObject({ code: 'NOT_FOUND', details: { problems: [{ backupId: partial }] } });
    const left = await r.manager.getBackup(partial);
    expect(left).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^NOT_FOUND: /) });
    expect(left.owner).toBeUndefined();
    expect((await r.manager.getVolume(v.id)).status).toBe('available');
    // Committed, then its packs lost: the manifest alone is not enough.
    const damaged = await backupThatDied(r, v.id, { commit: true });
    for (const key of await keys(r.store, 'packs/')) await r.store.delete(key);
    await expectCode(r.manager.resetState(damaged, 'available'), 'NOT_FOUND');
    expect((await r.manager.getBackup(damaged)).status).toBe('error');
    expect((await r.manager.getVolume(v.id)).status).toBe('available');
  });

  it('resetState() of a restore another container left restoring: the volume goes error_restoring, the backup available once verified', async () => {
    const r = await chunkedRig();
    const v = await filledVolume(r.volumes, MiB, 4);
    const dst = await filledVolume(r.volumes, MiB, 5);
    const b = await r.manager.backup({ volumeId: v.id });
    const catalog = new RepositoryCatalog(r.service.repository);
    await catalog.putBackup({ ...b, status: 'restoring', owner: otherContainer });
    await catalog.putVolumeState({ volumeId: dst.id, status: 'restoring-backup', previousStatus: 'available', backupId: b.id, since: new Date().toISOString() });
    expect((await r.manager.recover()).skipped).toEqual([b.id]);
    expect(await r.manager.resetState(b.id, 'available')).toMatchObject({ status: 'available', owner: undefined });
    expect((await r.manager.getVolume(dst.id)).status).toBe('error_restoring');
  });

  it('resetState() of a delete another container left deleting does not resume it: error, and available again once verified', async () => {
    const r = await chunkedRig();
    const v = await filledVolume(r.volumes, MiB, 6);
    const b = await r.manager.backup({ volumeId: v.id });
    await new RepositoryCatalog(r.service.repository).putBackup({ ...b, status: 'deleting', owner: otherContainer });
    expect(await r.manager.resetState(b.id, 'error')).toMatchObject({ status: 'error', failReason: expect.stringContaining('deleting') });
    // The data is whole: the service finds it so, though the manager verifies no `error` record.
    expect(await r.service.verify(b)).toMatchObject({ problems: [] });
    await expectCode(r.manager.verify(b.id), 'CONFLICT');
    expect(await r.manager.resetState(b.id, 'available')).toMatchObject({ status: 'available', failReason: undefined });
    await r.manager.deleteBackup(b.id);
    await expectCode(r.manager.getBackup(b.id), 'NOT_FOUND');
  });

  it('resetState() of a record in no flow: available → error, error → available once verified (Cinder), error → error keeps its failReason', async () => {
    const { volumes, manager } = rig();
    const v = await filledVolume(volumes, MiB, 7);
    const b = await manager.backup({ volumeId: v.id });
    const failed = await manager.resetState(b.id, 'error');
    expect(failed).toMatchObject({ status: 'error', failReason: 'CANCELLED: reset to error by reset-state (was available)' });
    expect(await manager.resetState(b.id, 'error')).toMatchObject({ status: 'error', failReason: failed.failReason });
    expect(await manager.resetState(b.id, 'available')).toMatchObject({ status: 'available', failReason: undefined });
    expect((await manager.restore({ backupId: b.id, newVolume: {} })).backup.status).toBe('available');
  });
});

describe('resetState(): refusals', () => {
  it('resetState() of a running backup or restore of this process is CONFLICT and leaves the job running', async () => {
    const { volumes, service, manager } = rig();
    const v = await filledVolume(volumes, MiB, 8);
    const done = await manager.backup({ volumeId: v.id });
    service.stallAfterBytes = 0;
    const running = await manager.startBackup({ volumeId: v.id });
    await service.reachedStall;
    await expectCode(manager.resetState(running.backupId, 'error'), 'CONFLICT');
    expect(await manager.getBackup(running.backupId)).toMatchObject({ status: 'creating', owner: me });
    expect((await manager.getVolume(v.id)).status).toBe('backing-up');
    running.cancel();
    await expectCode(running.done, 'CANCELLED');
    // A restore holds the backup it reads.
    const restore = service.restore.bind(service);
    let proceed!: () => void;
    const go = new Promise<void>((res) => (proceed = res));
    let reading!: () => void;
    const read = new Promise<void>((res) => (reading = res));
    service.restore = async (...args) => (reading(), await go, restore(...args));
    const restoring = manager.restore({ backupId: done.id, newVolume: {} });
    await read;
    await expectCode(manager.resetState(done.id, 'error'), 'CONFLICT');
    proceed();
    expect((await restoring).backup.status).toBe('available');
  });

  it('resetState() of a record whose owner is alive on this host, in this pid namespace, is CONFLICT; of a dead one, done', async () => {
    const { volumes, catalog, manager } = rig();
    const v = await filledVolume(volumes, MiB, 9);
    const b = await manager.backup({ volumeId: v.id });
    const creating: BackupRecord = { ...b, id: `${b.id}-2`, status: 'creating', owner: parent() };
    await catalog.putBackup(creating);
    await expect(manager.resetState(creating.id, 'error')).rejects.toMatchObject({ code: 'CONFLICT', details: { owner: { pid: process.ppid } } });
    expect(await manager.getBackup(creating.id)).toEqual(creating);
    await catalog.putBackup({ ...creating, owner: { host: hostname(), pid: NO_SUCH_PID, bootId: me.bootId, pidNamespace: me.pidNamespace } });
    expect(await manager.resetState(creating.id, 'error')).toMatchObject({ status: 'error' });
  });

  it('resetState(unknown id) is NOT_FOUND; a status other than available or error is INVALID_INPUT', async () => {
    const { volumes, manager } = rig();
    const b = await manager.backup({ volumeId: (await filledVolume(volumes, MiB, 10)).id });
    await expectCode(manager.resetState('no-such-backup', 'error'), 'NOT_FOUND');
    await expectCode(manager.resetState(b.id, 'creating' as 'error'), 'INVALID_INPUT');
    expect((await manager.getBackup(b.id)).status).toBe('available');
  });
});
