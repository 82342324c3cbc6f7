/**
 * A GC cancelled while the store's reads of manifests hang (ignoring the signal) rejects CANCELLED
 * at once, having deleted nothing; once the store answers, a GC of the same service runs and the
 * backup still restores. A real chunked repository on a memory store.
 */
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ByteRange, type CallOptions, type ChunkedBackupService } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { keys } from './helpers.js';

/** A memory store (not cancellable) whose gets of manifests wait until release() while `hang` is set, ignoring any signal. */
class HangingManifestStore extends MemoryObjectStore {
  hang = false;
  hung = 0;
  private readonly held: (() => void)[] = [];
  constructor() {
    super('mem');
    (this as { capabilities: object }).capabilities = { atomicIfAbsent: true };
  }
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (this.hang && key.startsWith('manifests/')) {
      this.hung++;
      await new Promise<void>((resolve) => this.held.push(resolve));
      return super.get(key, range);
    }
    return super.get(key, range, options);
  }
  release(): void {
    this.hang = false;
    for (const r of this.held.splice(0)) r();
  }
}

const within = <T,>(p: Promise<T>, ms: number): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`hung: not settled within ${ms} ms`)), ms).unref())]);
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

const services: ChunkedBackupService[] = [];
afterEach(async () => {
  for (const s of services.splice(0)) await s.close();
});

describe('gc cancelled while manifests are read', () => {
  it('rejects CANCELLED at once, no listener left, nothing deleted; the next gc runs', async () => {
    const store = new HangingManifestStore();
    const service = await openRepo(store);
    services.push(service);
    const data = pattern(2 * CHUNK, 31);
    const b = await backUp(service, 'b', data);
    await service.delete(await backUp(service, 'gone', pattern(2 * CHUNK, 32))); // a pack for GC to delete
    const before = await keys(store, 'packs/');
    store.hang = true;
    const abort = new AbortController();
    const p = service.gc({ graceMs: 0, signal: abort.signal });
    p.catch(() => undefined);
    while (store.hung === 0) await tick();
    abort.abort();
    // The hung gets answer only at release(), below: a gc that waited for them never settles here,
    // so the bound only tells "never" from "settled" (generous: a loaded machine is slow, not stuck).
    await expect(within(p, 20_000)).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
    expect(await keys(store, 'packs/')).toEqual(before);
    store.release();
    expect(await within(service.gc({ graceMs: 0 }), 30_000)).toMatchObject({ backups: 1, packsDeleted: 1 });
    expect((await restored(service, b)).equals(data)).toBe(true);
  }, 90_000);
});
