/**
 * A record the catalog lists as available whose data its target no longer holds (another
 * deployment imported the record and deleted the backup there, which removed the manifest): a
 * verify of every backup reports it `NOT_FOUND` (verify-backups.ts), unless it was deleted here
 * while the verify ran; an incremental based on it fails naming the remedy
 * (chunked-backup-service.ts).
 */
import { describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryCatalog, MemoryObjectStore, RepositoryCatalog, type ByteRange, type CallOptions } from '../src/index.js';
import { chunkedRig, closedAfterEach, FAST_KDF, filledVolume, MiB } from './helpers.js';

const keep = closedAfterEach();

/** A memory store that runs `onGet` once, at the first read of `key` (something happening while a verify reads). */
class HookStore extends MemoryObjectStore {
  hook: { key: string; run: () => Promise<void> } | undefined;
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    const hook = this.hook;
    if (hook && key === hook.key) {
      this.hook = undefined;
      await hook.run();
    }
    return super.get(key, range, options);
  }
}

/**
 * Deployment A (catalog in target `repo`'s repository, a second target `other`), a backup in each
 * target and a second one of `repo`'s volume; B, another deployment over `repo` with its own catalog.
 */
async function deployments() {
  const store = new HookStore('mem');
  const a = await chunkedRig(store);
  keep(a.service);
  const other = keep(await ChunkedBackupService.open(new MemoryObjectStore('mem2'), { name: 'other', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: FAST_KDF } }));
  const catalog = new RepositoryCatalog(a.service.repository);
  const manager = new BackupManager({ volumes: a.volumes, targets: { repo: a.service, other }, catalog });
  const volume = await filledVolume(a.volumes, 1 * MiB, 3);
  const full = await manager.backup({ volumeId: volume.id, target: 'repo' });
  const newest = await manager.backup({ volumeId: volume.id, target: 'repo', incremental: true });
  const elsewhere = await manager.backup({ volumeId: (await filledVolume(a.volumes, 1 * MiB, 4)).id, target: 'other' });
  const b = new BackupManager({ volumes: a.volumes, targets: { repo: a.service }, catalog: new MemoryCatalog() });
  return { store, catalog, manager, b, volume, full, newest, elsewhere };
}

describe('a verify of every backup and a record whose data is gone', () => {
  it('reports an available record whose manifest another deployment deleted NOT_FOUND, and only it', async () => {
    const { manager, b, full, newest, elsewhere } = await deployments();
    const exported = await manager.exportRecord(newest.id);
    await b.importRecord(exported.service, exported.record);
    await b.deleteBackup(newest.id);
    expect((await manager.getBackup(newest.id)).status).toBe('available'); // A's catalog does not know

    const report = await manager.verify();
    expect(report.checked.sort()).toEqual([full.id, newest.id, elsewhere.id].sort());
    expect(report.problems).toEqual([{ backupId: newest.id, code: 'NOT_FOUND', message: expect.stringContaining('target repo holds no data of it') }]);
    // As a verify of that backup alone says.
    expect((await manager.verify(newest.id)).problems).toEqual([expect.objectContaining({ backupId: newest.id, code: 'NOT_FOUND' })]);
  });

  it('leaves out a record whose data is gone that a delete here began while the verify ran', async () => {
    const { store, catalog, manager, full, newest, elsewhere } = await deployments();
    await store.delete(`manifests/${newest.id}`);
    store.hook = {
      key: `manifests/${full.id}`,
      // A delete begins: the record is `deleting` before the target deletes anything.
      run: async () => catalog.putBackup({ ...(await catalog.getBackup(newest.id)), status: 'deleting' }),
    };
    const report = await manager.verify();
    expect(store.hook).toBeUndefined(); // the verify read the full backup's manifest, so the hook ran
    expect(report.problems).toEqual([]);
    expect(report.checked.sort()).toEqual([full.id, elsewhere.id].sort());
  });
});

describe('an incremental whose parent has no manifest', () => {
  it('fails NOT_FOUND saying that the parent data is gone and what to do', async () => {
    const { store, manager, volume, newest } = await deployments();
    await store.delete(`manifests/${newest.id}`);
    const err = await manager.backup({ volumeId: volume.id, target: 'repo', incremental: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'NOT_FOUND', details: { backupId: newest.id } });
    const message = (err as Error).message;
    expect(message).toContain(`parent backup ${newest.id} of this incremental has no manifest`);
    expect(message).toContain('backup verify');
    expect(message).toContain(`delete backup ${newest.id}`);
    expect(message).toContain('full backup');
    // Once that backup is deleted, the next incremental builds on the one before it.
    await manager.deleteBackup(newest.id);
    const next = await manager.backup({ volumeId: volume.id, target: 'repo', incremental: true });
    expect(next).toMatchObject({ status: 'available', parentId: expect.any(String) });
    expect(next.parentId).not.toBe(newest.id);
  });
});
