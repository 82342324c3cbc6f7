import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore, type ObjectStore, type PutOptions } from '../src/index.js';
import { ChunkCodec } from '../src/repository/codec.js';
import { ChunkIndex } from '../src/repository/chunk-index.js';
import { PackWriter, indexDocPieces } from '../src/repository/pack-writer.js';
import { scanIndexDocument } from '../src/repository/index-scan.js';
import type { IndexEntry } from '../src/repository/format.js';

/** A chunk id (64 hex digits) named by `label`. */
const hexId = (label: string | number): string => createHash('sha256').update(String(label)).digest('hex');

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
    await Promise.all(blobs.map((b, i) => writer.add(hexId(i), b, b.length)));
    await writer.finish();
    for (let i = 0; i < blobs.length; i++) {
      const loc = index.get(hexId(i));
      expect(loc, `blob ${i}`).toBeDefined();
      const got = await store.get(`packs/${loc!.pack}`, { offset: loc!.offset, length: loc!.length });
      expect(got.equals(blobs[i]!)).toBe(true);
    }
    const fresh = new ChunkIndex(store, codec);
    await fresh.refresh();
    expect(fresh.chunkCount).toBe(40);
    // Blobs keep their source's alignment mod 8 (all sources here start at offset 0)...
    for (let i = 0; i < blobs.length; i++) expect(index.get(hexId(i))!.offset % 8).toBe(0);
    // ...also an odd one, with zeros as padding before it.
    const odd = Buffer.alloc(1000, 9).subarray(3, 800); // byteOffset 3 (within a larger allocation)
    const w2 = new PackWriter(store, codec, index, 1024 * 1024, 300 * 1024, 2);
    await w2.add(hexId('a'), Buffer.alloc(10, 1), 10);
    await w2.add(hexId('b'), odd, odd.length);
    await w2.finish();
    const b = index.get(hexId('b'))!;
    expect(b.offset % 8).toBe(odd.byteOffset % 8);
    const packBytes = await store.get(`packs/${b.pack}`);
    expect(packBytes.subarray(10, b.offset).every((x) => x === 0)).toBe(true);
    expect(packBytes.subarray(b.offset, b.offset + odd.length).equals(odd)).toBe(true);
  });

  it('names its packs in index objects of at most 64 packs, each written after its packs; a fresh index sees every pack', async () => {
    const store = new MemoryObjectStore();
    const codec = new ChunkCodec(undefined, undefined);
    const index = new ChunkIndex(store, codec);
    const writer = new PackWriter(store, codec, index, 1024 * 1024, 700 * 1024, 2);
    const puts: string[] = [];
    const put = store.put.bind(store);
    store.put = async (key, data, options) => {
      puts.push(key);
      return put(key, data, options);
    };
    // 600 KiB blobs: one per 1 MiB pack, so 150 blobs make 150 packs.
    for (let i = 0; i < 150; i++) await writer.add(hexId(i), Buffer.alloc(600 * 1024, i), 600 * 1024);
    await writer.finish();
    const packs = puts.filter((k) => k.startsWith('packs/'));
    const indexes = puts.filter((k) => k.startsWith('index/'));
    expect(packs).toHaveLength(150);
    expect(indexes).toHaveLength(3); // 64 + 64 + 22
    // Every index object came after every pack it names.
    const fresh = new ChunkIndex(store, codec);
    await fresh.refresh();
    expect(fresh.damaged.size).toBe(0);
    expect(fresh.packs().size).toBe(150);
    for (const [packId] of fresh.packs()) {
      const named = [...fresh.objectsNaming(new Set([packId])).keys()];
      expect(named).toHaveLength(1);
      expect(puts.indexOf(`packs/${packId}`)).toBeLessThan(puts.indexOf(`index/${named[0]}`));
    }
  });

  it('writes the text of an index object a pack at a time, exactly as JSON.stringify would, in the form the index scan reads', () => {
    const entries = (p: number, n: number): IndexEntry[] => Array.from({ length: n }, (_, i) => ({ id: hexId(`${p}/${i}`), offset: i * 131_080, length: 131_000 + i, rawLength: 131_072 }));
    for (const packs of [[], [[hexId('p0'), []]], [[hexId('p1'), entries(1, 3)], [hexId('p2'), entries(2, 200)]]] as [string, IndexEntry[]][][]) {
      const text = [...indexDocPieces(packs)].join('');
      expect(text).toBe(JSON.stringify({ version: 2, packs: packs.map(([id, es]) => [id, es.map((e) => [e.id, e.offset, e.length, e.rawLength])]) }));
      const scanned = scanIndexDocument(Buffer.from(text), 'x');
      expect(scanned?.packs).toEqual(packs.map(([packId, es]) => ({ packId, count: es.length })));
    }
  });
});
