import { describe, expect, it } from 'vitest';
import { chunkedRig, expectCode, filledVolume, MiB } from './helpers.js';
import { BackupManager, ChunkedBackupService, MemoryObjectStore, RepositoryCatalog, type MemoryVolumeDriver } from '../src/index.js';

// Two processes sharing one repository: each has its own Repository, catalog and manager (so no
// in-process lock is shared), and only the repository's objects between them. (Recovery shares
// live-records within a process, so recoveries racing are tested with child processes:
// plugins/backup-posix/test/records-cross-process.test.ts.)

/** A second "process" on the rig's store: its own service, catalog and manager; its deletes counted. */
async function otherProcess(store: MemoryObjectStore, volumes: MemoryVolumeDriver) {
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0 });
  const catalog = new RepositoryCatalog(service.repository);
  return { service, catalog, manager: new BackupManager({ volumes, targets: { repo: service }, catalog }) };
}

/** Counts `service.delete` calls and makes each take `ms`, so another process acts meanwhile. */
function countDeletes(service: ChunkedBackupService, ms: number): { calls: string[] } {
  const seen = { calls: [] as string[] };
  const del = service.delete.bind(service);
  service.delete = async (backup, options) => {
    seen.calls.push(backup.id);
    await new Promise((r) => setTimeout(r, ms));
    return del(backup, options);
  };
  return seen;
}

const outcome = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: { code?: string }) => String(e.code),
  );

describe('record sections across processes sharing a repository', () => {
  it('of two deletes of one backup at once from two processes, one deletes and the other is CONFLICT; the target deletes once', async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const backup = await a.manager.backup({ volumeId: v.id });
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    // Longer than a waiting section's poll (repository-locks: up to 375 ms), so the second
    // process's check comes while the first's delete runs.
    const deletesA = countDeletes(a.service, 800);
    const deletesB = countDeletes(b.service, 800);
    const results = await Promise.all([outcome(a.manager.deleteBackup(backup.id)), outcome(b.manager.deleteBackup(backup.id))]);
    expect(results.sort()).toEqual(['CONFLICT', 'ok']);
    expect([...deletesA.calls, ...deletesB.calls]).toEqual([backup.id]);
    await expectCode(a.manager.getBackup(backup.id), 'NOT_FOUND');
    expect(await a.service.repository.locks.list()).toEqual([]);
  });

  it("a delete in another process of a backup that an incremental is building on is CONFLICT naming the child; once the incremental is done it deletes", async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const full = await a.manager.backup({ volumeId: v.id });
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    // A's incremental waits at the start of its copy, having claimed its parent.
    let arrived!: () => void;
    let letGo!: () => void;
    const atCopy = new Promise<void>((r) => (arrived = r));
    const gate = new Promise<void>((r) => (letGo = r));
    const backup = a.service.backup.bind(a.service);
    a.service.backup = async (job, source) => {
      arrived();
      await gate;
      return backup(job, source);
    };
    const inc = a.manager.backup({ volumeId: v.id, incremental: true });
    await atCopy;
    const err = await b.manager.deleteBackup(full.id).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'CONFLICT', details: { backupId: full.id } });
    const child = (err as { details: { childId: string } }).details.childId;
    letGo();
    expect(await inc).toMatchObject({ id: child, parentId: full.id, status: 'available' });
    await b.manager.deleteBackup(full.id);
    await expectCode(b.manager.getBackup(full.id), 'NOT_FOUND');
  });

  it('a section holds a record lock of the repository while it runs and removes it after, also when it fails; GC is not held up by it', async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const repo = a.service.repository;
    const catalog = new RepositoryCatalog(repo);
    const seen = await catalog.section('b1', async () => {
      const locks = await repo.locks.list();
      // GC's lock is granted at once (without waiting) while the section runs.
      const gc = await repo.locks.acquire('exclusive', { purpose: 'gc' });
      await gc.release();
      // Another process's section of the same record would wait: a record lock of b1 is BUSY.
      await expectCode(repo.locks.acquire('record', { backupId: 'b1', purpose: 'other' }), 'BUSY');
      // One of another record is not.
      await (await repo.locks.acquire('record', { backupId: 'b2', purpose: 'other' })).release();
      return locks.map((l) => [l.kind, l.backupId, l.stale]);
    });
    expect(seen).toEqual([['record', 'b1', false]]);
    expect(await repo.locks.list()).toEqual([]);
    await expectCode(
      catalog.section('b1', async () => {
        throw Object.assign(new Error('boom'), { code: 'INTERNAL' });
      }),
      'INTERNAL',
    );
    expect(await repo.locks.list()).toEqual([]);
  });

  it('a section of another process waits for the running one, then runs', async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    const catalogA = new RepositoryCatalog(a.service.repository);
    const order: string[] = [];
    let letGo!: () => void;
    const held = new Promise<void>((r) => (letGo = r));
    const first = catalogA.section('b1', async () => {
      order.push('a in');
      await held;
      order.push('a out');
    });
    await new Promise((r) => setTimeout(r, 20));
    const second = b.catalog.section('b1', async () => {
      order.push('b in');
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(order).toEqual(['a in']);
    letGo();
    await Promise.all([first, second]);
    expect(order).toEqual(['a in', 'a out', 'b in']);
  });
});
