/**
 * A lock that cannot be read is never taken for stale (a failed read of a live backup's lock must
 * not let GC run beside it, nor `unlock` delete it); a corrupt lock object is live until its
 * modification time plus the lock lifetime; a holder whose refreshes fail stops while more than a
 * margin of its lock's lifetime is left, before another host may see it stale.
 */
import { describe, expect, it } from 'vitest';
import { CairnError, MemoryObjectStore, type ByteRange, type CallOptions, type PutOptions } from '../src/index.js';
import { RepositoryLocks, type LockHandle } from '../src/repository/repository-locks.js';
import { MiB, chunkedRig, closedAfterEach, filledVolume, gate } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves once `done()` holds, checked every 20 ms: waits for a condition, not a guessed duration. */
const until = async (done: () => Promise<boolean> | boolean): Promise<void> => {
  while (!(await done())) await sleep(20);
};
const held = (lock: LockHandle): boolean => {
  try {
    lock.assertHeld();
    return true;
  } catch {
    return false;
  }
};

/**
 * A store whose reads of lock objects fail `UNAVAILABLE` (an NFS EIO/ESTALE, an S3 503): the next
 * read of each key in `failOnce`, and every read of the keys in `failAlways`. Lock writes fail
 * while `down`.
 */
class FlakyLockStore extends MemoryObjectStore {
  readonly failOnce = new Set<string>();
  readonly failAlways = new Set<string>();
  down = false;
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.failAlways.has(key) || this.failOnce.delete(key)) throw new CairnError('UNAVAILABLE', `get ${key}: EIO`, { driver: 'mem' });
    return super.get(key, range, options);
  }
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.down && key.startsWith('locks/')) throw new CairnError('UNAVAILABLE', 'store unreachable', { driver: 'mem' });
    return super.put(key, data, options);
  }
}

const lockKeys = async (store: MemoryObjectStore): Promise<string[]> => {
  const out: string[] = [];
  for await (const o of store.list('locks/')) out.push(o.key);
  return out.sort();
};

describe('a lock whose read fails', () => {
  const keep = closedAfterEach();

  /** A backup stopped just before its manifest, every chunk of it reused from a deleted backup's packs (GC would delete them). */
  async function backupAtManifest() {
    const store = new FlakyLockStore('mem');
    const { service, volumes, manager } = await chunkedRig(store);
    keep(service);
    const v = await filledVolume(volumes, 2 * MiB, 61);
    await manager.deleteBackup((await manager.backup({ volumeId: v.id })).id);
    const atManifest = gate();
    const repo = service.repository;
    const writeManifest = repo.writeManifest.bind(repo);
    repo.writeManifest = async (...args) => (await atManifest.arrive(), writeManifest(...args));
    const running = manager.backup({ volumeId: v.id });
    await atManifest.reached;
    return { store, service, atManifest, running, backupLocks: await lockKeys(store) };
  }

  it('once: GC still sees the live backup and is refused BUSY; the backup then verifies', async () => {
    const { store, service, atManifest, running, backupLocks } = await backupAtManifest();
    expect(backupLocks).toHaveLength(2); // shared and volume
    for (const key of backupLocks) store.failOnce.add(key); // the reads of both of the backup's locks fail once each
    await expect(service.gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'BUSY' });
    expect(store.failOnce.size).toBe(0);
    atManifest.release();
    expect((await running).status).toBe('available');
    expect((await service.verify()).problems).toEqual([]);
  });

  it('for good: GC fails with the store\'s error naming the lock, deletes nothing and leaves no lock of its own', async () => {
    const { store, service, atManifest, running, backupLocks } = await backupAtManifest();
    const packs = async () => {
      let n = 0;
      for await (const _ of store.list('packs/')) n++;
      return n;
    };
    const before = await packs();
    store.failAlways.add(backupLocks[0]!);
    const err = await service.gc({ graceMs: 0 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', details: { lock: backupLocks[0]!.slice('locks/'.length) } });
    expect(await packs()).toBe(before);
    expect(await lockKeys(store)).toEqual(backupLocks);
    store.failAlways.clear();
    atManifest.release();
    expect((await running).status).toBe('available');
    expect((await service.verify()).problems).toEqual([]);
  });

  it('is not deleted by an unlock of stale locks (once: left as live; for good: the unlock fails); --all deletes it unread', async () => {
    const store = new FlakyLockStore('mem');
    const locks = new RepositoryLocks(store);
    const live = await locks.acquire('shared', { purpose: 'backup on another host' });
    store.failOnce.add(`locks/${live.doc.id}`);
    expect(await locks.breakLocks()).toEqual([]);
    expect(store.failOnce.size).toBe(0);
    expect(await lockKeys(store)).toEqual([`locks/${live.doc.id}`]);
    store.failAlways.add(`locks/${live.doc.id}`);
    await expect(locks.breakLocks()).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { lock: live.doc.id } });
    expect(await lockKeys(store)).toEqual([`locks/${live.doc.id}`]);
    expect(await locks.breakLocks({ all: true })).toEqual([live.doc.id]);
    expect(await lockKeys(store)).toEqual([]);
    await live.release().catch(() => undefined);
  });
});

describe('a corrupt lock object', () => {
  it('is live, blocking every lock that reads it, until its modification time plus the lock lifetime, then stale', async () => {
    const store = new MemoryObjectStore('mem');
    const hex = Buffer.from('b1', 'utf8').toString('hex');
    await store.put('locks/torn', Buffer.from('{"id":"torn","kind":"excl'));
    await store.put('locks/empty', Buffer.from('null'));
    await store.put(`locks/record-${hex}-x`, Buffer.from('{}'));
    const modified = Date.parse((await store.head('locks/torn')).modifiedAt);
    const locks = new RepositoryLocks(store); // 5 minutes
    const listed = await locks.list();
    expect(listed.map((l) => [l.id, l.corrupt, l.stale]).sort()).toEqual([['empty', true, false], [`record-${hex}-x`, true, false], ['torn', true, false]]);
    expect(listed.find((l) => l.id === 'torn')?.expiresAt).toBe(new Date(modified + 5 * 60_000).toISOString());
    await expect(locks.acquire('shared', { purpose: 'backup' })).rejects.toMatchObject({ code: 'BUSY', details: { lock: expect.stringMatching(/^(torn|empty)$/) } });
    await expect(locks.acquire('volume', { purpose: 'backup', volumeId: 'v' })).rejects.toMatchObject({ code: 'BUSY' });
    await expect(locks.acquire('record', { purpose: 'record', backupId: 'b1' })).rejects.toMatchObject({ code: 'BUSY', details: { lock: `record-${hex}-x` } });
    expect(await locks.breakLocks()).toEqual([]);
    expect((await lockKeys(store)).length).toBe(3); // the refused takers left none of theirs

    // Judged with a short lifetime, they expire: then stale, blocking nothing, and broken.
    const short = new RepositoryLocks(store, 200);
    await until(async () => (await short.list()).every((l) => l.stale));
    const lock = await short.acquire('exclusive', { purpose: 'gc' });
    await lock.release();
    expect((await short.breakLocks()).sort()).toEqual(['empty', `record-${hex}-x`, 'torn']);
    expect(await lockKeys(store)).toEqual([]);
  });
});

describe('a holder whose refreshes fail', () => {
  it('reports not held while the lock is still live to others (a third of its lifetime left), and stays so after refreshes resume', async () => {
    const store = new FlakyLockStore('mem');
    // 6 s: refreshed every second; the margin is 2 s, so the first check that finds it not held
    // comes before its expiry unless that check is 2 s late.
    const locks = new RepositoryLocks(store, 6000);
    const lock = await locks.acquire('exclusive', { purpose: 'gc' });
    store.down = true;
    let checkedAt = 0;
    await until(() => {
      checkedAt = Date.now();
      return !held(lock);
    });
    // When it first said so, others still saw it live (nothing rewrites it during the outage): a
    // host whose clock runs ahead by less than the margin would too.
    const seen = (await locks.list()).find((l) => l.id === lock.doc.id)!;
    expect(Date.parse(seen.expiresAt)).toBeGreaterThan(checkedAt);
    expect(() => lock.assertHeld()).toThrow(expect.objectContaining({ code: 'BUSY' }));
    store.down = false;
    await until(async () => Date.parse((await locks.list()).find((l) => l.id === lock.doc.id)!.expiresAt) > Date.parse(seen.expiresAt)); // a rewrite landed
    expect(held(lock)).toBe(false);
    await lock.release();
  });

  it('is still held after one failed refresh: a store hiccup does not stop the job', async () => {
    const store = new FlakyLockStore('mem');
    const locks = new RepositoryLocks(store, 3000);
    const lock = await locks.acquire('shared', { purpose: 'backup' });
    const stored = async () => Date.parse((await locks.list()).find((l) => l.id === lock.doc.id)!.expiresAt);
    const first = await stored();
    const put = store.put.bind(store);
    let failed = 0;
    store.put = async (key, data, options) => {
      if (key.startsWith('locks/') && failed === 0) {
        failed++;
        throw new CairnError('UNAVAILABLE', 'store hiccup', { driver: 'mem' });
      }
      return put(key, data, options);
    };
    await until(async () => failed === 1 && (await stored()) > first); // one refresh failed, a later one landed
    expect(held(lock)).toBe(true);
    await lock.release();
  });
});

describe('a lock whose acquire took long', () => {
  it('is rewritten at once when a sixth of its lifetime passed since it was written, and stays held', async () => {
    // Its conflict check (the listing of locks) takes 1.6 s of a 3 s lifetime: more than half.
    // Counted from the end of the acquire, the first rewrite would land 2.1 s after the write,
    // inside the 1 s margin, and the lock would count as lapsed for good.
    class SlowListing extends MemoryObjectStore {
      lockWrites = 0;
      override async *list(prefix: string, options?: CallOptions) {
        if (prefix.startsWith('locks/')) await sleep(1600);
        yield* super.list(prefix, options);
      }
      override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
        await super.put(key, data, options);
        if (key.startsWith('locks/') && !options?.ifAbsent) this.lockWrites++;
      }
    }
    const store = new SlowListing('mem');
    const lock = await new RepositoryLocks(store, 3000).acquire('shared', { purpose: 'backup' });
    await until(() => store.lockWrites >= 2); // two rewrites landed
    expect(held(lock)).toBe(true);
    await lock.release();
  });
});

describe('a corrupt record lock', () => {
  it("lives as long as the record locks its check reads (that acquire's lifetime), not the instance's", async () => {
    const store = new MemoryObjectStore('mem');
    const hex = Buffer.from('b1', 'utf8').toString('hex');
    await store.put(`locks/record-${hex}-x`, Buffer.from('{}'));
    const locks = new RepositoryLocks(store); // 5 minutes
    await expect(locks.acquire('record', { purpose: 'record', backupId: 'b1', ttlMs: 300 })).rejects.toMatchObject({ code: 'BUSY', details: { lock: `record-${hex}-x` } });
    // 300 ms after its write it is stale to a record check of 300 ms locks; the waiting acquire gets it.
    const lock = await locks.acquire('record', { purpose: 'record', backupId: 'b1', ttlMs: 300, wait: true });
    lock.assertHeld();
    await lock.release();
  });
});
