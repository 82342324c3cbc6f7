/**
 * RepositoryLocks.acquire cancelled while the store holds one of its calls (a gate in front of
 * the memory store, which honours signals: ObjectStore CallOptions). A cancelled acquire leaves
 * no lock object that blocks later acquires, and a read the abort cancelled is never taken for
 * an unreadable (stale) lock.
 */
import { describe, expect, it } from 'vitest';
import { CairnError, MemoryObjectStore, type ByteRange, type CallOptions, type ObjectInfo, type PutOptions } from '../src/index.js';
import { RepositoryLocks } from '../src/repository/repository-locks.js';

/** One closed gate; `release` opens it for every call waiting and every later one. */
class Gate {
  waiting = 0;
  private open: () => void = () => undefined;
  private readonly opened = new Promise<void>((r) => (this.open = r));
  async pass(): Promise<void> {
    this.waiting++;
    await this.opened;
  }
  release(): void {
    this.open();
  }
  async someWaiting(): Promise<void> {
    while (this.waiting === 0) await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * The memory store with its lock puts, lock gets or lock listings held at a gate (then run with
 * the caller's options). `publishDespiteAbort`: a held put that finds its signal aborted once let
 * through stores the object anyway and rejects CANCELLED, as a store may when the abort raced
 * its publishing step. `listNewestFirst`: listings in reverse order of writing (no order is promised).
 */
class GatedStore extends MemoryObjectStore {
  puts?: Gate;
  gets?: Gate;
  /** With `gets`: only the get of this key is held. */
  getKey?: string;
  lists?: Gate;
  publishDespiteAbort = false;
  listNewestFirst = false;

  override async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    if (!this.puts || !key.startsWith('locks/')) return super.put(key, data, options);
    await this.puts.pass();
    if (!this.publishDespiteAbort || !options.signal?.aborted) return super.put(key, data, options);
    await super.put(key, data, { ...options, signal: undefined });
    throw new CairnError('CANCELLED', 'cancelled as it published', { driver: this.name });
  }

  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.gets && key.startsWith('locks/') && (this.getKey === undefined || key === this.getKey)) await this.gets.pass();
    return super.get(key, range, options);
  }

  override async *list(prefix: string, options: CallOptions = {}): AsyncIterable<ObjectInfo> {
    if (this.lists && prefix.startsWith('locks/')) await this.lists.pass();
    if (!this.listNewestFirst) return yield* super.list(prefix, options);
    const all: ObjectInfo[] = [];
    for await (const o of super.list(prefix, {})) all.push(o);
    for (const o of all.reverse()) {
      if (options.signal?.aborted) throw new CairnError('CANCELLED', 'cancelled', { driver: this.name });
      yield o;
    }
  }
}

async function lockKeys(store: MemoryObjectStore): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list('locks/')) out.push(o.key);
  return out;
}

describe('an acquire cancelled while the store holds its call', () => {
  for (const publishDespiteAbort of [false, true]) {
    it(`cancelled while its put is held (${publishDespiteAbort ? 'the put publishes as it rejects CANCELLED' : 'the put publishes nothing'}): no lock object is left to block a later acquire`, async () => {
      const store = new GatedStore('mem');
      store.publishDespiteAbort = publishDespiteAbort;
      const locks = new RepositoryLocks(store, 60_000, 5);
      const gate = (store.puts = new Gate());
      const abort = new AbortController();
      const acquiring = locks.acquire('shared', { purpose: 'restore', wait: true, signal: abort.signal });
      acquiring.catch(() => undefined);
      await gate.someWaiting();
      abort.abort(new Error('cancelled by the test'));
      gate.release();
      await expect(acquiring).rejects.toMatchObject({ code: 'CANCELLED' });
      store.puts = undefined;
      // Its delete was started, not awaited: it has had a turn of the event loop to land.
      await new Promise((r) => setImmediate(r));
      expect(await lockKeys(store)).toEqual([]);
      // An exclusive lock, which every live lock blocks, is granted at once.
      const gc = await locks.acquire('exclusive', { purpose: 'gc' });
      await gc.release();
    });
  }

  it('cancelled during its conflict read: it removes its own lock object', async () => {
    const store = new GatedStore('mem');
    const locks = new RepositoryLocks(store, 60_000, 5);
    const gate = (store.lists = new Gate());
    const abort = new AbortController();
    const acquiring = locks.acquire('volume', { purpose: 'backup', volumeId: 'v1', wait: true, signal: abort.signal });
    acquiring.catch(() => undefined);
    await gate.someWaiting();
    store.lists = undefined; // the test's own listing passes
    expect(await lockKeys(store)).toHaveLength(1); // its own, written before the read
    abort.abort(new Error('cancelled by the test'));
    gate.release();
    await expect(acquiring).rejects.toMatchObject({ code: 'CANCELLED' });
    await new Promise((r) => setImmediate(r));
    expect(await lockKeys(store)).toEqual([]);
    const gc = await locks.acquire('exclusive', { purpose: 'gc' });
    await gc.release();
  });

  it('a read of a live conflicting lock that the abort cancelled is no unreadable (stale) lock: the acquire rejects CANCELLED and is never granted', async () => {
    const store = new GatedStore('mem');
    // The live lock is listed last (its own lock, newer, first), and only its read is held: no
    // listing step follows the cancelled read.
    store.listNewestFirst = true;
    const locks = new RepositoryLocks(store, 60_000, 5);
    const gc = await locks.acquire('exclusive', { purpose: 'gc' });
    store.getKey = `locks/${gc.doc.id}`;
    const gate = (store.gets = new Gate());
    const abort = new AbortController();
    const acquiring = locks.acquire('shared', { purpose: 'restore', wait: false, signal: abort.signal });
    acquiring.catch(() => undefined);
    await gate.someWaiting();
    abort.abort(new Error('cancelled by the test'));
    gate.release();
    const outcome = await acquiring.then(
      async (handle) => {
        await handle.release();
        return 'granted while an exclusive lock is live';
      },
      (err: unknown) => err,
    );
    expect(outcome).toMatchObject({ code: 'CANCELLED' });
    store.gets = undefined;
    await new Promise((r) => setImmediate(r));
    // Only the exclusive lock is left, and it still blocks.
    expect(await lockKeys(store)).toEqual([`locks/${gc.doc.id}`]);
    await expect(locks.acquire('shared', { purpose: 'restore' })).rejects.toMatchObject({ code: 'BUSY' });
    await gc.release();
  });
});

describe('the memory store honours signals (capability cancellable)', () => {
  it('declares cancellable; an already-aborted signal rejects every call CANCELLED and changes nothing', async () => {
    const store = new MemoryObjectStore('mem');
    expect(store.capabilities.cancellable).toBe(true);
    await store.put('k/kept', Buffer.from('original'));
    const aborted = AbortSignal.abort(new Error('cancelled by the test'));
    await expect(store.put('k/kept', Buffer.from('replacement'), { signal: aborted })).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(store.put('k/new', Buffer.from('x'), { ifAbsent: true, signal: aborted })).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(store.delete('k/kept', { signal: aborted })).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(store.get('k/kept', undefined, { signal: aborted })).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(store.head('k/kept', { signal: aborted })).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(lockKeysOf(store.list('k/', { signal: aborted }))).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(store.openWrite('k/parts', { signal: aborted })).rejects.toMatchObject({ code: 'CANCELLED' });
    expect((await store.get('k/kept')).toString()).toBe('original');
    expect(await lockKeysOf(store.list('k/'))).toEqual(['k/kept']);
  });

  it('a write in parts whose signal aborts: appends and commit reject CANCELLED and nothing is published', async () => {
    const store = new MemoryObjectStore('mem');
    const abort = new AbortController();
    const w = await store.openWrite('k/parts', { signal: abort.signal });
    await w.append(Buffer.alloc(1000, 1));
    abort.abort(new Error('cancelled by the test'));
    await expect(w.append(Buffer.alloc(10, 2))).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(w.commit()).rejects.toMatchObject({ code: 'CANCELLED' });
    await w.abort();
    await expect(store.head('k/parts')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

async function lockKeysOf(it: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const out: string[] = [];
  for await (const o of it) out.push(o.key);
  return out;
}

describe('an acquire cancelled while it waits for a conflicting lock to go', () => {
  it('rejects CANCELLED at once, not after its poll interval, and leaves no lock object of its own', async () => {
    const store = new MemoryObjectStore('mem');
    // A poll interval far past the test's timeout: only a wait that watches the signal ends in time.
    const locks = new RepositoryLocks(store, 60_000, 600_000);
    const gc = await locks.acquire('exclusive', { purpose: 'gc' });
    const abort = new AbortController();
    const waiting = locks.acquire('shared', { purpose: 'backup', wait: true, signal: abort.signal });
    waiting.catch(() => undefined);
    // Its first attempt (memory store calls: microtasks) has found the exclusive lock, removed its
    // own and is waiting to try again.
    await new Promise((r) => setTimeout(r, 50));
    abort.abort(new Error('cancelled by the test'));
    await expect(waiting).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(await lockKeys(store)).toEqual([`locks/${gc.doc.id}`]);
    await gc.release();
  }, 10_000);
});
