/**
 * `breakLocks` (`cairn repo unlock`) deletes a stale lock only as it judged it: a holder's refresh
 * that lands between the judging read and the delete keeps the lock. A lock object larger than
 * LOCK_MAX_BYTES is never read whole: it is corrupt.
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ByteRange, type CallOptions, type ObjectInfo } from '../src/index.js';
import { RepositoryLocks, type LockDoc } from '../src/repository/repository-locks.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves once `done()` holds, checked every 20 ms: waits for a condition, not a guessed duration. */
const until = async (done: () => Promise<boolean>): Promise<void> => {
  while (!(await done())) await sleep(20);
};

const KEY = 'locks/held-elsewhere';
/** Far past LOCK_MAX_BYTES (64 KiB). */
const MiB = 1024 * 1024;

/** A lock of a process on another host (judged by its expiry only), expiring at `expiresAt`. */
const lockDoc = (expiresAt: number, purpose = 'backup v1'): LockDoc => ({
  id: 'held-elsewhere',
  kind: 'shared',
  owner: { host: 'another-host.example', pid: 4242 },
  purpose,
  createdAt: new Date(expiresAt - 60_000).toISOString(),
  expiresAt: new Date(expiresAt).toISOString(),
});
const bytes = (doc: LockDoc): Buffer => Buffer.from(JSON.stringify(doc));

/**
 * A memory store that runs `hook` once, before the first `head` or `delete` of KEY (or, with
 * `onGet`, before the first `get` of it after the first one), and counts the gets of KEY.
 */
class HookStore extends MemoryObjectStore {
  hook?: () => Promise<void>;
  onGet = false;
  gets = 0;
  private async fire(key: string): Promise<void> {
    if (key !== KEY || !this.hook) return;
    const hook = this.hook;
    this.hook = undefined;
    await hook();
  }
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (key === KEY && this.onGet && this.gets++ >= 1) await this.fire(key);
    else if (key === KEY && !this.onGet) this.gets++;
    return super.get(key, range, options);
  }
  override async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    if (!this.onGet) await this.fire(key);
    return super.head(key, options);
  }
  override async delete(key: string, options?: CallOptions): Promise<void> {
    await this.fire(key);
    return super.delete(key, options);
  }
}

describe('breaking stale locks', () => {
  it('keeps a lock whose holder refreshed it between the judging read and the delete', async () => {
    const store = new HookStore('mem');
    // Its holder's refresh is late: the lock expired a moment ago, so unlock judges it stale.
    await store.put(KEY, bytes(lockDoc(Date.now() - 1000)));
    const refreshed = bytes(lockDoc(Date.now() + 5 * 60_000));
    store.onGet = true;
    store.hook = () => store.put(KEY, refreshed); // the refresh lands right after the judging read
    const locks = new RepositoryLocks(store);
    expect(await locks.breakLocks()).toEqual([]);
    expect(await store.get(KEY)).toEqual(refreshed);
    expect((await locks.list()).find((l) => l.id === 'held-elsewhere')).toMatchObject({ stale: false });
  });

  it('keeps a corrupt lock object rewritten (same bytes, new modification time) after it was read again', async () => {
    const store = new HookStore('mem');
    await store.put(KEY, Buffer.from('not a lock document'));
    const locks = new RepositoryLocks(store, 100); // a corrupt object lives 100 ms from its write
    await until(async () => (await locks.list())[0]!.stale);
    // Its writer rewrites it just before unlock's head (the last look before the delete).
    store.hook = async () => {
      const before = (await store.head(KEY)).modifiedAt;
      while ((await store.head(KEY)).modifiedAt === before) {
        await sleep(2);
        await store.put(KEY, Buffer.from('not a lock document'));
      }
    };
    expect(await locks.breakLocks()).toEqual([]);
    expect((await locks.list())[0]).toMatchObject({ corrupt: true, stale: false });
  });

  it('still deletes a stale lock that nothing rewrote, and skips one deleted meanwhile', async () => {
    const store = new HookStore('mem');
    await store.put(KEY, bytes(lockDoc(Date.now() - 1000)));
    await store.put('locks/released', bytes({ ...lockDoc(Date.now() - 1000), id: 'released' }));
    const locks = new RepositoryLocks(store);
    expect(await locks.breakLocks()).toEqual(expect.arrayContaining(['held-elsewhere', 'released']));
    expect(await locks.list()).toEqual([]);

    await store.put(KEY, bytes(lockDoc(Date.now() - 1000)));
    store.gets = 0;
    store.onGet = true;
    store.hook = () => store.delete(KEY); // released by its holder after the judging read
    expect(await locks.breakLocks()).toEqual([]);
  });
});

describe('a lock object larger than LOCK_MAX_BYTES', () => {
  it('is corrupt without being read, live for the lock lifetime from its write, then broken', async () => {
    const store = new HookStore('mem');
    // A lock document in form, but padded far past any real one.
    const huge = bytes(lockDoc(Date.now() - 1000, 'x'.repeat(MiB)));
    await store.put(KEY, huge);
    const locks = new RepositoryLocks(store, 300);
    expect((await locks.list())[0]).toMatchObject({ id: 'held-elsewhere', corrupt: true, stale: false });
    await expect(locks.acquire('shared', { purpose: 'backup' })).rejects.toMatchObject({ code: 'BUSY' });
    expect(store.gets).toBe(0);
    await until(async () => (await locks.list())[0]!.stale);
    expect(await locks.breakLocks()).toEqual(['held-elsewhere']);
    expect(store.gets).toBe(0);
  });

  it('is corrupt when it grew past the bound between the listing and the read', async () => {
    const store = new HookStore('mem');
    await store.put(KEY, bytes(lockDoc(Date.now() - 1000)));
    const original = store.get.bind(store);
    let replaced = false;
    store.get = async (key, range, options) => {
      if (key === KEY && !replaced) {
        replaced = true;
        await store.put(KEY, bytes(lockDoc(Date.now() - 1000, 'x'.repeat(MiB))));
      }
      return original(key, range, options);
    };
    expect((await new RepositoryLocks(store).list())[0]).toMatchObject({ corrupt: true, stale: false });
  });
});
