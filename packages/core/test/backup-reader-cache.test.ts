/**
 * BackupReader's chunk cache: a fetch of a chunk that fails after its promise was evicted (and a
 * newer fetch of the same chunk cached in its place) takes only its own promise out of the cache,
 * never the newer one: the chunk is not fetched again. A real chunked repository on a memory store.
 */
import { describe, expect, it } from 'vitest';
import { BackupReader, CairnError, MemoryObjectStore, type ByteRange, type CallOptions } from '../src/index.js';
import { CHUNK, backUp, openRepo, pattern } from './buffer-backups.js';
import { closedAfterEach } from './helpers.js';
import { tick } from './settle.js';

/** A memory store whose next get of a pack, once `holdNext` is set, waits until release() and then fails UNAVAILABLE; it counts the gets of packs. */
class OneFailingGetStore extends MemoryObjectStore {
  holdNext = false;
  packGets = 0;
  private held: (() => void) | undefined;
  override async get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer> {
    if (key.startsWith('packs/')) {
      this.packGets++;
      if (this.holdNext) {
        this.holdNext = false;
        await new Promise<void>((resolve) => (this.held = resolve));
        throw new CairnError('UNAVAILABLE', 'the store failed this read');
      }
    }
    return super.get(key, range, options);
  }
  get holding(): boolean {
    return this.held !== undefined;
  }
  release(): void {
    this.held?.();
    this.held = undefined;
  }
}

const keep = closedAfterEach();

describe('BackupReader cache', () => {
  it('a failed fetch settling after its chunk was evicted and fetched again leaves the newer fetch cached', async () => {
    const store = new OneFailingGetStore('mem');
    const service = keep(await openRepo(store));
    const data = pattern(6 * CHUNK, 51);
    await backUp(service, 'b1', data);
    // The smallest cache (4 chunks), no read-ahead: each read fetches its own chunks only.
    const reader = await BackupReader.open(service.repository, 'b1', { cacheChunks: 4, readAhead: 0 });

    store.holdNext = true;
    const first = reader.read(0, 10); // chunk 0: its fetch hangs, then fails
    first.catch(() => undefined);
    while (!store.holding) await tick();
    // Four other chunks fill the cache past its size: chunk 0's pending promise is evicted.
    for (let k = 1; k <= 4; k++) expect((await reader.read(k * CHUNK, 10)).equals(data.subarray(k * CHUNK, k * CHUNK + 10))).toBe(true);
    // Chunk 0 again: a new fetch, which reads well and is cached.
    expect((await reader.read(0, 10)).equals(data.subarray(0, 10))).toBe(true);
    store.release(); // the first fetch fails now
    await expect(first).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await tick(20);
    const gets = store.packGets;
    // Chunk 0 is read from the cache: no new get.
    expect((await reader.read(0, CHUNK)).equals(data.subarray(0, CHUNK))).toBe(true);
    expect(store.packGets).toBe(gets);
  });
});
