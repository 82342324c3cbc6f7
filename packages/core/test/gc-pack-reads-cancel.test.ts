/**
 * A GC cancelled while the store's reads of packs hang (ignoring the signal) rejects CANCELLED at
 * once, leaves no listener on the signal and has deleted nothing: the head of a pack the listing
 * lacks (lost packs), the head and ranged get of an unnamed pack's trailer (adoption), the head
 * that sizes a pack a dry run would delete. Once the store answers, the next GC runs and the
 * backup restores. A real chunked repository on a memory store.
 */
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ByteRange, type CallOptions, type ChunkedBackupService, type ObjectInfo } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { keys } from './helpers.js';

/**
 * A memory store (not cancellable) whose heads (`hang` 'head') or ranged gets (`hang` 'get') of
 * packs wait until release(), ignoring any signal; with `hideList` its listing of packs/ is empty.
 */
class HangingPackStore extends MemoryObjectStore {
  hang: 'head' | 'get' | undefined;
  hideList = false;
  hung = 0;
  private readonly held: (() => void)[] = [];
  constructor() {
    super('mem');
    (this as { capabilities: object }).capabilities = { atomicIfAbsent: true };
  }
  private async stall(): Promise<void> {
    this.hung++;
    await new Promise<void>((resolve) => this.held.push(resolve));
  }
  override async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    if (this.hang === 'head' && key.startsWith('packs/')) return this.stall().then(() => super.head(key));
    return super.head(key, options);
  }
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.hang === 'get' && range && key.startsWith('packs/')) return this.stall().then(() => super.get(key, range));
    return super.get(key, range, options);
  }
  override list(prefix: string, options?: CallOptions): AsyncIterable<ObjectInfo> {
    if (this.hideList && prefix.startsWith('packs/')) return (async function* () {})();
    return super.list(prefix, options);
  }
  release(): void {
    this.hang = undefined;
    this.hideList = false;
    for (const r of this.held.splice(0)) r();
  }
}

/** Rejects with 'hung' when `p` has not settled within `ms`: a bound telling "never" from "settled", not a timing. */
const within = <T,>(p: Promise<T>, ms: number): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`hung: not settled within ${ms} ms`)), ms).unref())]);
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

const services: ChunkedBackupService[] = [];
afterEach(async () => {
  for (const s of services.splice(0)) await s.close();
});
const open = async (store: HangingPackStore): Promise<ChunkedBackupService> => {
  const s = await openRepo(store);
  services.push(s);
  return s;
};

type Setup = { hang: 'head' | 'get'; hideList?: boolean; dryRun?: boolean; unnamed?: boolean };
const cases: [string, Setup][] = [
  ['the head of a pack the listing lacks', { hang: 'head', hideList: true }],
  ["the head of an unnamed pack's trailer", { hang: 'head', unnamed: true }],
  ["the ranged get of an unnamed pack's trailer", { hang: 'get', unnamed: true }],
  ['the head sizing a pack a dry run would delete', { hang: 'head', dryRun: true }],
];

describe('gc cancelled while reads of packs hang', () => {
  for (const [what, setup] of cases) {
    it(`during ${what}: CANCELLED at once, no listener left, nothing deleted; the next gc runs`, async () => {
      const store = new HangingPackStore();
      const first = await open(store);
      const data = pattern(2 * CHUNK, 51);
      const b = await backUp(first, 'b', data);
      await first.delete(await backUp(first, 'gone', pattern(2 * CHUNK, 52))); // a pack for GC to delete
      // Unnamed packs (a writer died before naming them): GC reads their trailers to adopt b's chunks.
      if (setup.unnamed) for (const k of await keys(store, 'index/')) await store.delete(k);
      const service = setup.unnamed ? await open(store) : first;
      const before = await keys(store, '');
      store.hang = setup.hang;
      store.hideList = setup.hideList ?? false;
      const abort = new AbortController();
      const p = service.gc({ graceMs: 0, dryRun: setup.dryRun, signal: abort.signal });
      p.catch(() => undefined);
      while (store.hung === 0) await tick();
      abort.abort();
      await expect(within(p, 20_000)).rejects.toMatchObject({ code: 'CANCELLED' });
      expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
      expect(await keys(store, '')).toEqual(before);
      store.release();
      await within(service.gc({ graceMs: 0 }), 30_000);
      expect((await restored(service, b)).equals(data)).toBe(true);
      expect((await service.verify()).problems).toEqual([]);
    }, 90_000);
  }
});
