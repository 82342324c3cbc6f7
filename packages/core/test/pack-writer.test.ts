import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ObjectStore, type PutOptions } from '../src/index.js';
import { ChunkCodec } from '../src/repository/codec.js';
import { ChunkIndex } from '../src/repository/chunk-index.js';
import { PackWriter } from '../src/repository/pack-writer.js';

/** A store whose puts take a while, as a real disk or network does. */
class SlowStore extends MemoryObjectStore {
  override async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    await new Promise((r) => setTimeout(r, 3));
    return super.put(key, data, options);
  }
}

describe('PackWriter', () => {
  it('add() called concurrently keeps every blob, each findable in exactly the pack it landed in', async () => {
    const store: ObjectStore = new SlowStore();
    const codec = new ChunkCodec(undefined, undefined);
    const index = new ChunkIndex(store, codec);
    const writer = new PackWriter(store, codec, index, 1024 * 1024, 300 * 1024, 2);
    const blobs = Array.from({ length: 40 }, (_, i) => Buffer.alloc(100 * 1024 + i, i + 1));
    await Promise.all(blobs.map((b, i) => writer.add(`id${i}`, b, b.length)));
    await writer.finish();
    for (let i = 0; i < blobs.length; i++) {
      const loc = index.get(`id${i}`);
      expect(loc, `blob ${i}`).toBeDefined();
      const got = await store.get(`packs/${loc!.pack}`, { offset: loc!.offset, length: loc!.length });
      expect(got.equals(blobs[i]!)).toBe(true);
    }
    const fresh = new ChunkIndex(store, codec);
    await fresh.refresh();
    expect(fresh.chunkCount).toBe(40);
  });
});
