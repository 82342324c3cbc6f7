import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { CairnError, MemoryObjectStore, type ObjectPartWriter, type ObjectStore, type PutOptions } from '../src/index.js';
import { ChunkCodec } from '../src/repository/codec.js';
import { ChunkIndex } from '../src/repository/chunk-index.js';
import { PackWriter, indexDocPieces, writeIndexObject } from '../src/repository/pack-writer.js';
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

/** A store that can only put whole objects (no writeInParts: an object store without part writes). */
class WholeObjectStore extends MemoryObjectStore {
  override readonly capabilities = { atomicIfAbsent: true };
  override async openWrite(): Promise<never> {
    throw new Error('this store has no part writes: openWrite must not be called');
  }
}

/** A store whose part writers fail every append once `room` bytes were appended in all, as a disk that fills up. */
class FillingStore extends MemoryObjectStore {
  opened = 0;
  aborted = 0;
  private used = 0;
  constructor(private readonly room: number) {
    super();
  }
  override async openWrite(key: string, options?: PutOptions): Promise<ObjectPartWriter> {
    const inner = await super.openWrite(key, options);
    this.opened++;
    return {
      append: async (data) => {
        this.used += data.length;
        if (this.used > this.room) throw new CairnError('UNAVAILABLE', 'no space left on device');
        return inner.append(data);
      },
      commit: () => inner.commit(),
      abort: async () => {
        this.aborted++;
        return inner.abort();
      },
    };
  }
}

/** Writes 40 blobs of about 100 KiB, concurrently, through a writer of 1 MiB packs and checks each is where the index says. */
async function roundTrip(store: ObjectStore): Promise<ChunkIndex> {
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
  return index;
}

describe('PackWriter', () => {
  it('writes the same packs whole (a store that only puts) as streamed in parts (writeInParts)', async () => {
    const whole = new WholeObjectStore();
    const streamed = new MemoryObjectStore();
    const opened: string[] = [];
    const openWrite = streamed.openWrite.bind(streamed);
    streamed.openWrite = async (key, options) => (opened.push(key), openWrite(key, options));
    const [a, b] = [await roundTrip(whole), await roundTrip(streamed)];
    // Same layout: as many packs, each blob at the same offset of its pack.
    expect(b.packs().size).toBe(a.packs().size);
    for (let i = 0; i < 40; i++) expect(b.get(hexId(i))!.offset).toBe(a.get(hexId(i))!.offset);
    expect(opened.filter((k) => k.startsWith('packs/')).sort()).toEqual([...b.packs().keys()].map((id) => `packs/${id}`).sort());
    for (const store of [whole, streamed]) {
      const fresh = new ChunkIndex(store, new ChunkCodec(undefined, undefined));
      await fresh.refresh();
      expect(fresh.damaged.size).toBe(0);
      expect(fresh.chunkCount).toBe(40);
    }
  });

  it('a streamed pack whose store fails mid-pack fails add or finish with the store\'s error; abandon aborts it and no pack is published', async () => {
    const store = new FillingStore(1536 * 1024); // room for one 1 MiB pack and half of the next
    const codec = new ChunkCodec(undefined, undefined);
    const index = new ChunkIndex(store, codec);
    const writer = new PackWriter(store, codec, index, 1024 * 1024, 300 * 1024, 2);
    let failure: unknown;
    try {
      for (let i = 0; i < 40; i++) await writer.add(hexId(i), Buffer.alloc(100 * 1024, i + 1), 100 * 1024);
      await writer.finish();
    } catch (err) {
      failure = err;
      await writer.abandon();
    }
    expect(failure).toMatchObject({ code: 'UNAVAILABLE' });
    // Every pack opened was either published whole or aborted; published ones are readable and indexed.
    const packs: string[] = [];
    for await (const o of store.list('packs/')) packs.push(o.key);
    expect(store.aborted).toBeGreaterThan(0);
    expect(packs.length + store.aborted).toBeGreaterThanOrEqual(store.opened);
    const fresh = new ChunkIndex(store, codec);
    await fresh.refresh();
    expect(fresh.damaged.size).toBe(0);
    expect([...fresh.packs().keys()].map((id) => `packs/${id}`).sort()).toEqual(packs.sort());
  });

  it('add() called concurrently keeps every blob, each findable in exactly the pack it landed in', async () => {
    const store: ObjectStore = new SlowStore();
    const codec = new ChunkCodec(undefined, undefined);
    const index = await roundTrip(store);
    const fresh = new ChunkIndex(store, codec);
    await fresh.refresh();
    expect(fresh.chunkCount).toBe(40);
    // Blobs keep their source's alignment mod 8 (all sources here start at offset 0)...
    for (let i = 0; i < 40; i++) expect(index.get(hexId(i))!.offset % 8).toBe(0);
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

  it("names other writers' packs it is given in its own index objects: each once, none the index knows, 64 packs an object at most", async () => {
    const store = new MemoryObjectStore();
    const codec = new ChunkCodec(undefined, undefined);
    const index = new ChunkIndex(store, codec);
    const pack = (p: number): [string, IndexEntry[]] => [hexId(`other ${p}`), [{ id: hexId(`other ${p}/0`), offset: 0, length: 90, rawLength: 131_072 }]];
    await writeIndexObject(store, codec, index, [pack(0)]); // named already
    const puts: string[] = [];
    const put = store.put.bind(store);
    store.put = async (key, data, options) => {
      puts.push(key);
      return put(key, data, options);
    };
    const writer = new PackWriter(store, codec, index, 1024 * 1024, 300 * 1024, 2);
    for (let p = 0; p <= 70; p++) writer.name(...pack(p));
    writer.name(...pack(3));
    await writer.finish();
    expect(puts).toHaveLength(2); // 64 + 6 packs, no pack of its own
    const fresh = new ChunkIndex(store, codec);
    await fresh.refresh();
    expect(fresh.packs().size).toBe(71);
    // Each pack named by exactly one object: the first by the one that named it before, the rest by the writer's.
    for (let p = 0; p <= 70; p++) expect(fresh.objectsNaming(new Set([hexId(`other ${p}`)])).size).toBe(1);
  });

  it('naming packs the index knows already (another writer named them, or GC names survivors again) records the object and leaves the entries as they are, with no rebuild of the table', async () => {
    const store = new MemoryObjectStore();
    const codec = new ChunkCodec(undefined, undefined);
    const index = new ChunkIndex(store, codec);
    const entries = (p: number): IndexEntry[] => Array.from({ length: 50 }, (_, i) => ({ id: hexId(`${p}/${i}`), offset: i * 100, length: 90, rawLength: 131_072 }));
    await writeIndexObject(store, codec, index, [[hexId('p1'), entries(1)], [hexId('p2'), entries(2)]]);
    const add = vi.spyOn(index, 'add');
    await writeIndexObject(store, codec, index, [[hexId('p2'), entries(2)], [hexId('p3'), entries(3)]]);
    expect(add.mock.calls.map(([packId]) => packId)).toEqual([hexId('p3')]); // re-adding p2 rebuilt the whole table (~0.3 s a pack at a million chunks)
    expect([...index.objectsNaming(new Set([hexId('p2')])).keys()]).toHaveLength(2);
    expect(index.get(hexId('2/7'))).toMatchObject({ pack: hexId('p2'), offset: 700 });
    expect(index.chunkCount).toBe(150);
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
