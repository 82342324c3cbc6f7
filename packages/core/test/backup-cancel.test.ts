/**
 * A backup cancelled while its pipeline waits on a store that does not answer (a hung mount, a
 * stalled connection): it rejects promptly with CANCELLED, whatever the store does later, and
 * memory the store may still be reading is never handed to another backup.
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ObjectPartWriter, type PutOptions } from '../src/index.js';
import { backUp, openRepo, pattern, restored } from './buffer-backups.js';
import { MiB } from './helpers.js';
import { within } from './settle.js';

/** A store whose pack writes (puts, and parts of streamed packs) never settle once `hang` is set. */
class HangingPackStore extends MemoryObjectStore {
  hang = false;
  /** Pack writes hung so far. */
  hung = 0;
  private never(): Promise<never> {
    this.hung++;
    return new Promise<never>(() => {});
  }
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    if (this.hang && key.startsWith('packs/')) return this.never();
    return super.put(key, data, options);
  }
  override async openWrite(key: string, options?: PutOptions): Promise<ObjectPartWriter> {
    const inner = await super.openWrite(key, options);
    if (!key.startsWith('packs/')) return inner;
    return {
      append: (data) => (this.hang ? this.never() : inner.append(data)),
      commit: () => (this.hang ? this.never() : inner.commit()),
      abort: () => inner.abort(),
    };
  }
}

/*
 * `within` bounds only what must settle once the store answers. A cancel is awaited without it:
 * the store hangs, so a cancel that waited for the store would never settle, and the test's
 * timeout is the bound.
 */
describe('a backup cancelled while the store hangs', () => {
  for (const streamed of [true, false]) {
    it(`backup() rejects CANCELLED at once when its pack uploads never settle (${streamed ? 'streamed packs' : 'whole packs'})`, async () => {
      const store = new HangingPackStore('mem');
      if (!streamed) (store as { capabilities: object }).capabilities = { atomicIfAbsent: true };
      const service = await openRepo(store);
      store.hang = true;
      const abort = new AbortController();
      const data = pattern(64 * MiB, 7);
      const backup = backUp(service, 'b1', data, undefined, undefined, abort.signal);
      backup.catch(() => undefined);
      // The pipeline fills every slot and stops: reads wait for packs that never land.
      while (store.hung === 0) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 100));
      abort.abort();
      await expect(backup).rejects.toMatchObject({ code: 'CANCELLED' });
      // Nothing is held: the store answers again, and the next backup (same process, same pooled
      // memory, same locks) stores and restores byte for byte.
      store.hang = false;
      const next = pattern(8 * MiB, 8);
      expect((await restored(service, await within(backUp(service, 'b2', next), 10_000))).equals(next)).toBe(true);
    });
  }
});

describe('a gc cancelled while the store hangs', () => {
  it("gc() rejects CANCELLED at once when its repack's pack uploads never settle, and the next gc runs", async () => {
    const store = new HangingPackStore('mem');
    const service = await openRepo(store);
    const first = pattern(32 * MiB, 11);
    const b1 = await backUp(service, 'b1', first);
    // b2 shares b1's first half: deleting b1 leaves b1's packs half dead, so gc repacks them.
    const second = Buffer.concat([first.subarray(0, 16 * MiB), pattern(16 * MiB, 12)]);
    const b2 = await backUp(service, 'b2', second);
    await service.delete(b1);
    store.hang = true;
    const abort = new AbortController();
    const gc = service.gc({ graceMs: 0, repackThreshold: 0.01, signal: abort.signal });
    gc.catch(() => undefined);
    while (store.hung === 0) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100));
    abort.abort();
    await expect(gc).rejects.toMatchObject({ code: 'CANCELLED' });
    // Nothing was deleted, nothing is held: the next gc (same process, same locks) does the work.
    store.hang = false;
    const report = await within(service.gc({ graceMs: 0, repackThreshold: 0.01 }), 10_000);
    expect(report.packsRepacked).toBeGreaterThan(0);
    expect((await restored(service, b2)).equals(second)).toBe(true);
    expect((await service.verify()).problems).toEqual([]);
  });
});
