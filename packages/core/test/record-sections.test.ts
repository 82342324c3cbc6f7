import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { chunkedRig, expectCode, filledVolume, gate, MiB } from './helpers.js';
import { BackupManager, CairnError, ChunkedBackupService, MemoryObjectStore, RepositoryCatalog, type Catalog, type MemoryVolumeDriver } from '../src/index.js';

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

/** Holds `backupId`'s section in `catalog` until `leave()` (which resolves once it has ended). */
async function holdSection(catalog: Catalog, backupId: string): Promise<{ leave: () => Promise<void> }> {
  const inside = gate();
  const held = catalog.section(backupId, () => inside.arrive());
  await inside.reached;
  return { leave: () => (inside.release(), held) };
}

/** Makes the service's next backup wait at the start of its copy (`reached`) until `release()`. */
function gateNextBackup(service: ChunkedBackupService): ReturnType<typeof gate> {
  const g = gate();
  const backup = service.backup.bind(service);
  let first = true;
  service.backup = async (job, source) => {
    if (first) {
      first = false;
      await g.arrive();
    }
    return backup(job, source);
  };
  return g;
}

/** `p`, or `'still waiting'` after `ms`. */
const within = <T>(p: Promise<T>, ms: number): Promise<T | 'still waiting'> => Promise.race([p, new Promise<'still waiting'>((r) => setTimeout(() => r('still waiting'), ms))]);

/**
 * Resolves after UNBLOCK_MS: a bound on a wait that the code under test must not make, so that a
 * regression fails on the order of the events a test records rather than hanging. No test asserts
 * how long anything took.
 */
const UNBLOCK_MS = 5_000;
const unblocked = (): Promise<void> => new Promise((r) => setTimeout(r, UNBLOCK_MS).unref());

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
    const copy = gateNextBackup(a.service);
    const inc = a.manager.backup({ volumeId: v.id, incremental: true });
    await copy.reached;
    const err = await b.manager.deleteBackup(full.id).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'CONFLICT', details: { backupId: full.id } });
    const child = (err as { details: { childId: string } }).details.childId;
    copy.release();
    expect(await inc).toMatchObject({ id: child, parentId: full.id, status: 'available' });
    await b.manager.deleteBackup(full.id);
    await expectCode(b.manager.getBackup(full.id), 'NOT_FOUND');
  });

  it('a queued incremental does not keep a backup it will not build on from being deleted', async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const f1 = await a.manager.backup({ volumeId: v.id });
    // F2 holds the volume, waiting in its copy; the incremental queues behind it.
    const copy = gateNextBackup(a.service);
    // Requested together, before either holds the volume.
    const f2 = a.manager.backup({ volumeId: v.id });
    const inc = a.manager.backup({ volumeId: v.id, incremental: true });
    await copy.reached;
    await a.manager.deleteBackup(f1.id);
    copy.release();
    const done = await f2;
    expect(await inc).toMatchObject({ parentId: done.id, status: 'available' });
  });

  it("a cancel ends a job waiting for another process's section on its parent", async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const full = await a.manager.backup({ volumeId: v.id });
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    const held = await holdSection(b.catalog, full.id);
    const controller = new AbortController();
    const inc = outcome(a.manager.backup({ volumeId: v.id, incremental: true, signal: controller.signal }));
    await new Promise((r) => setTimeout(r, 300));
    controller.abort();
    // The section is left only below: an end at all shows the cancel did not wait for it (the bound
    // tells "never" from a slow machine's late answer).
    const ended = await within(inc, 20_000);
    await held.leave();
    expect(ended).toBe('CANCELLED');
  });

  it("a section's lock whose delete failed once is deleted by a retry: the backup's next section does not wait for it", async () => {
    const store = new MemoryObjectStore('mem');
    const a = await chunkedRig(store);
    const catalog = new RepositoryCatalog(a.service.repository);
    const del = store.delete.bind(store);
    let failNext = true;
    store.delete = async (key) => {
      if (failNext && key.startsWith('locks/')) {
        failNext = false;
        throw new CairnError('UNAVAILABLE', 'store hiccup', { driver: 'mem' });
      }
      return del(key);
    };
    await catalog.section('b1', async () => undefined);
    expect(failNext).toBe(false);
    expect(await a.service.repository.locks.list()).toEqual([]);
    const b = await otherProcess(store, a.volumes);
    const next = await Promise.race([b.catalog.section('b1', async () => 'ran'), new Promise((r) => setTimeout(() => r('waiting'), 2_000))]);
    expect(next).toBe('ran');
  });

  it("recovery resumes a dead owner's delete outside the record's section: another process's section runs meanwhile and finds this process the owner", async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const backup = await a.manager.backup({ volumeId: v.id });
    const catalog = new RepositoryCatalog(a.service.repository);
    await catalog.putBackup({ ...(await catalog.getBackup(backup.id)), status: 'deleting', owner: { host: hostname(), pid: 2 ** 22 + 4321 } });
    const events: string[] = [];
    // The resumed delete waits in the target until `finish` (or, should the other process's
    // section below wait for it, for at most UNBLOCK_MS: then the events' order shows it).
    let deleting!: () => void;
    const inDelete = new Promise<void>((r) => (deleting = r));
    let finishDelete!: () => void;
    const finish = new Promise<void>((r) => (finishDelete = r));
    const del = a.service.delete.bind(a.service);
    a.service.delete = async (record, o) => {
      deleting();
      await Promise.race([finish, unblocked()]);
      events.push('delete ended');
      return del(record, o);
    };
    const recovered = a.manager.recover();
    await inDelete;
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    const seen = await b.catalog.section(backup.id, async () => (events.push('section ran'), b.catalog.getBackup(backup.id)));
    expect(seen).toMatchObject({ status: 'deleting', owner: { pid: process.pid } });
    expect(await b.manager.recover()).toMatchObject({ resumedDeletes: [], skipped: [backup.id] });
    // The other process's section ran, and its recovery skipped the record, while the delete was still running.
    expect(events).toEqual(['section ran']);
    finishDelete();
    expect((await recovered).resumedDeletes).toEqual([backup.id]);
    expect(events).toEqual(['section ran', 'delete ended']);
    await expectCode(catalog.getBackup(backup.id), 'NOT_FOUND');
  });

  it("recovery does not wait for another process's section of a backup whose volume state it would leave alone", async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const full = await a.manager.backup({ volumeId: v.id });
    const catalog = new RepositoryCatalog(a.service.repository);
    await catalog.putVolumeState({ volumeId: v.id, status: 'error_restoring', previousStatus: 'available', backupId: full.id, since: new Date().toISOString() });
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    const held = await holdSection(b.catalog, full.id);
    const events: string[] = [];
    const recovering = a.manager.recover().then((report) => (events.push('recovered'), report));
    // The section is left once recovery has ended (or, should recovery wait for it, after UNBLOCK_MS).
    await Promise.race([recovering, unblocked()]);
    events.push('section left');
    await held.leave();
    await recovering;
    expect(events).toEqual(['recovered', 'section left']);
    expect(await catalog.getVolumeState(v.id)).toMatchObject({ status: 'error_restoring' });
  });

  it("recovery leaves a dead owner's delete on a target this process lacks as it is, reported, not taken over", async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const full = await a.manager.backup({ volumeId: v.id });
    const catalog = new RepositoryCatalog(a.service.repository);
    const deadOwner = { host: hostname(), pid: 2 ** 22 + 4321 };
    await catalog.putBackup({ ...(await catalog.getBackup(full.id)), status: 'deleting', service: 'elsewhere', owner: deadOwner });
    const report = await a.manager.recover();
    expect(report.resumedDeletes).toEqual([]);
    expect(report.errors).toEqual([expect.stringContaining(`${full.id}: NOT_FOUND`)]);
    expect(await catalog.getBackup(full.id)).toMatchObject({ status: 'deleting', owner: deadOwner });
  });

  it("a cancelled incremental releases its parent without waiting for another process's section on it", async () => {
    const a = await chunkedRig(new MemoryObjectStore('mem'));
    const v = await filledVolume(a.volumes, 2 * MiB);
    const full = await a.manager.backup({ volumeId: v.id });
    let arrived!: () => void;
    const atCopy = new Promise<void>((r) => (arrived = r));
    a.service.backup = async (job) => {
      arrived();
      return new Promise((_, reject) => job.signal.addEventListener('abort', () => reject(job.signal.reason), { once: true }));
    };
    const controller = new AbortController();
    const inc = outcome(a.manager.backup({ volumeId: v.id, incremental: true, signal: controller.signal }));
    await atCopy;
    const b = await otherProcess(a.store as MemoryObjectStore, a.volumes);
    const held = await holdSection(b.catalog, full.id);
    controller.abort();
    // The section is left only below: an end at all shows the cancel did not wait for it (the bound
    // tells "never" from a slow machine's late answer).
    const ended = await within(inc, 20_000);
    await held.leave();
    expect(ended).toBe('CANCELLED');
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

  it("a section reads no lock but its backup's record locks, and other locks' checks read no record lock", async () => {
    const store = new MemoryObjectStore('mem');
    const a = await chunkedRig(store);
    const locks = a.service.repository.locks;
    const shared = await Promise.all(Array.from({ length: 20 }, (_, i) => locks.acquire('shared', { purpose: `job ${i}` })));
    const read: string[] = [];
    const get = store.get.bind(store);
    store.get = async (key, range) => {
      if (key.startsWith('locks/')) read.push(key);
      return get(key, range);
    };
    const listed: string[] = [];
    const list = store.list.bind(store);
    store.list = (prefix) => (listed.push(prefix), list(prefix));
    const catalog = new RepositoryCatalog(a.service.repository);
    await catalog.section('b1', async () => {
      // Its check lists only its backup's record locks.
      expect(listed).toEqual([`locks/record-${Buffer.from('b1').toString('hex')}-`]);
      expect(read.filter((k) => !k.startsWith('locks/record-'))).toEqual([]);
      read.length = 0;
      const another = await locks.acquire('shared', { purpose: 'one more job' });
      expect(read.filter((k) => k.startsWith('locks/record-'))).toEqual([]);
      expect(read.length).toBe(21);
      await another.release();
    });
    for (const l of shared) await l.release();
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

describe("a section whose record lock lapses (its refresh failed until it expired)", () => {
  /** A store on which every refresh (overwrite) of a record lock fails while `outage` is set. */
  function refreshOutage(store: MemoryObjectStore): { outage: boolean } {
    const state = { outage: false };
    const put = store.put.bind(store);
    store.put = async (key, data, options) => {
      if (state.outage && key.startsWith('locks/record-') && !options?.ifAbsent) throw new CairnError('UNAVAILABLE', 'store outage', { driver: 'mem' });
      return put(key, data, options);
    };
    return state;
  }

  it("refuses the section's writes with BUSY and writes nothing; a section whose refreshes land writes as usual", async () => {
    const store = new MemoryObjectStore('mem');
    const a = await chunkedRig(store);
    const v = await filledVolume(a.volumes, 2 * MiB);
    const backup = await a.manager.backup({ volumeId: v.id });
    const outage = refreshOutage(store);
    // A lock that must stay held lives 3 s (refreshed every 500 ms, held while more than 1 s is
    // left: a refresh timer late by up to 1.5 s on a slow machine does not lapse it); one that
    // must lapse lives 300 ms, and no refresh lands for 600 ms.
    const steady = new RepositoryCatalog(a.service.repository, { recordLockTtlMs: 3000 });
    const catalog = new RepositoryCatalog(a.service.repository, { recordLockTtlMs: 300 });
    const slowWrite = (cat: RepositoryCatalog, ms: number, description: string) =>
      cat.section(backup.id, async () => {
        await new Promise((r) => setTimeout(r, ms)); // past the lock's lifetime: refreshed, or lapsed
        await cat.putBackup({ ...(await cat.getBackup(backup.id)), description });
      });
    await slowWrite(steady, 3100, 'refreshed');
    expect((await catalog.getBackup(backup.id)).description).toBe('refreshed');
    outage.outage = true;
    const err = await slowWrite(catalog, 600, 'lapsed').then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'BUSY' });
    expect((await catalog.getBackup(backup.id)).description).toBe('refreshed');
    // The volume state and deletes are refused the same way; a nested section's writes check the outer one's lock.
    const refused = await catalog.section(backup.id, async () => {
      await new Promise((r) => setTimeout(r, 600));
      return Promise.all([
        outcome(catalog.deleteBackup(backup.id)),
        outcome(catalog.clearVolumeState(v.id)),
        outcome(catalog.putVolumeState({ volumeId: v.id, status: 'error_restoring', previousStatus: 'available', backupId: backup.id, since: new Date().toISOString() })),
        outcome(catalog.section('another-backup', () => catalog.putBackup({ ...backup, id: 'another-backup' }))),
      ]);
    });
    expect(refused).toEqual(['BUSY', 'BUSY', 'BUSY', 'BUSY']);
    await catalog.getBackup(backup.id);
    await expectCode(catalog.getBackup('another-backup'), 'NOT_FOUND');
    // Writes outside any section are the catalog's usual ones.
    outage.outage = false;
    await catalog.putBackup({ ...backup, description: 'after' });
    expect((await catalog.getBackup(backup.id)).description).toBe('after');
  });
});
