/**
 * The one-time upgrade of an older repository (Repository.upgradeFormat) takes its caller's signal:
 * a GC or a backup cancelled while the upgrade's store calls hang (and ignore the signal) rejects
 * CANCELLED, leaves no abort listener and leaves the repository unmigrated; once the store
 * answers, the next run migrates it. Format 4 (the upgrade is a read of `config` and one write of it, the write held here)
 * and format 2 (its records' volume entries come first: the listing of the records is held).
 * A real chunked repository on a memory store.
 */
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { CairnError, type PutOptions } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { HoldingStore } from './hang-helpers.js';
import { closedAfterEach, keys } from './helpers.js';
import { tick } from './settle.js';

const keep = closedAfterEach();

/**
 * A HoldingStore whose puts of keys under a prefix given to holdPut hang too, ignoring any signal,
 * until release(), which fails them UNAVAILABLE, writing nothing (a write the store lost): what
 * a later run finds is what the cancelled one left.
 */
class PutHoldingStore extends HoldingStore {
  private putHolds: string[] = [];
  private readonly heldPuts: (() => void)[] = [];

  holdPut(prefix: string): void {
    this.putHolds.push(prefix);
  }

  override release(): void {
    this.putHolds = [];
    for (const fail of this.heldPuts.splice(0)) fail();
    super.release();
  }

  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.putHolds.some((p) => key.startsWith(p))) {
      this.hung++;
      return new Promise<void>((_, reject) => this.heldPuts.push(() => reject(new CairnError('UNAVAILABLE', `put of ${key} lost`))));
    }
    return super.put(key, data, options);
  }
}

const version = async (store: HoldingStore): Promise<number> => (JSON.parse((await store.get('config')).toString()) as { version: number }).version;

/** Every key but the locks' (the runs take and release theirs). */
const contents = async (store: HoldingStore): Promise<string[]> => (await keys(store, '')).filter((k) => !k.startsWith('locks/'));

/**
 * A store with one backup (returned with its data) and a deleted one's pack for GC to delete,
 * whose config was then rewritten to say `format`, and a service opened on it since.
 */
async function oldRepository(format: number) {
  const store = new PutHoldingStore();
  const data = pattern(2 * CHUNK, 51);
  const first = keep(await openRepo(store));
  const b = await backUp(first, 'b', data);
  await first.delete(await backUp(first, 'gone', pattern(2 * CHUNK, 52)));
  await store.put('config', Buffer.from(JSON.stringify({ ...JSON.parse((await store.get('config')).toString()), version: format })));
  const service = keep(await openRepo(store));
  expect(service.repository.config.version).toBe(format);
  return { store, service, b, data };
}

/** Starts `run` with a new signal, aborts it once the store hung a call; expects CANCELLED (the held call never answers before release) and no listener left. */
async function cancelWhileHung(store: HoldingStore, run: (signal: AbortSignal) => Promise<unknown>): Promise<void> {
  const abort = new AbortController();
  const p = run(abort.signal);
  p.catch(() => undefined);
  while (store.hung === 0) await tick();
  abort.abort();
  // A run waiting for the held call never settles, and the test's timeout fails it.
  await expect(p).rejects.toMatchObject({ code: 'CANCELLED' });
  expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
}

const holds: [string, number, (s: PutHoldingStore) => void][] = [
  ['format 4, its config write hangs', 4, (s) => s.holdPut('config')],
  ['format 2, the listing of its records hangs', 2, (s) => s.hold('list', 'catalog/backups/')],
];

describe('upgradeFormat cancelled while the store hangs', () => {
  it.each(holds)('gc, %s: CANCELLED, not migrated, nothing deleted; the next gc migrates', async (_, format, hold) => {
    const { store, service, b, data } = await oldRepository(format);
    const before = await contents(store);
    hold(store);
    await cancelWhileHung(store, (signal) => service.gc({ graceMs: 0, signal }));
    expect(await version(store)).toBe(format);
    expect(await contents(store)).toEqual(before);
    store.release();
    expect(service.repository.config.version).toBe(format);
    expect(await service.gc({ graceMs: 0 })).toMatchObject({ backups: 1, packsDeleted: 1 });
    expect(await version(store)).toBe(5);
    expect(service.repository.config.version).toBe(5);
    expect((await service.verify()).problems).toEqual([]);
    expect((await restored(service, b)).equals(data)).toBe(true);
  }, 60_000);

  it.each(holds)('backup, %s: CANCELLED, not migrated; the next backup migrates', async (_, format, hold) => {
    const { store, service, b, data } = await oldRepository(format);
    hold(store);
    await cancelWhileHung(store, (signal) => backUp(service, 'c', pattern(2 * CHUNK, 53), b, undefined, signal));
    expect(await version(store)).toBe(format);
    expect((await keys(store, 'manifests/')).map((k) => k.slice('manifests/'.length))).toEqual([b.id]);
    store.release();
    const next = pattern(2 * CHUNK, 54);
    const c = await backUp(service, 'c2', next, b);
    expect(await version(store)).toBe(5);
    expect(service.repository.config.version).toBe(5);
    expect((await restored(service, c)).equals(next)).toBe(true);
    expect((await restored(service, b)).equals(data)).toBe(true);
  }, 60_000);
});
