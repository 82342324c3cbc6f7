import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore } from '../src/index.js';
import { ChunkCodec, encodeDocument } from '../src/repository/codec.js';
import { ChunkIndex, indexLabel } from '../src/repository/chunk-index.js';
import type { IndexEntry } from '../src/repository/format.js';

const hexId = (label: string | number): string => createHash('sha256').update(String(label)).digest('hex');
const entry = (label: string | number, offset: number): IndexEntry => ({ id: hexId(label), offset, length: 100 + offset, rawLength: 4096 });
const fresh = () => new ChunkIndex(new MemoryObjectStore(), new ChunkCodec(undefined, undefined));

describe('ChunkIndex', () => {
  it('answers like a map over many packs (growth, rehashing and removal included)', () => {
    const index = fresh();
    const model = new Map<string, { pack: string; offset: number }>();
    const packs: string[] = [];
    for (let p = 0; p < 300; p++) {
      const packId = hexId(`pack${p}`);
      packs.push(packId);
      // Every 7th chunk repeats an earlier one: the first pack seen keeps it.
      const entries = Array.from({ length: 50 }, (_, j) => entry(j % 7 === 0 ? (p * 50 + j) % 500 : p * 50 + j, j * 200));
      index.add(packId, entries);
      for (const e of entries) if (!model.has(e.id)) model.set(e.id, { pack: packId, offset: e.offset });
    }
    const check = () => {
      expect(index.chunkCount).toBe(model.size);
      for (const [id, want] of model) expect(index.get(id), id).toMatchObject({ id, pack: want.pack, offset: want.offset, length: 100 + want.offset, rawLength: 4096 });
    };
    check();
    // Removing packs: ids held elsewhere fall to the next pack that has them, others disappear.
    for (const packId of packs.filter((_, i) => i % 3 === 0)) index.remove(packId);
    const live = packs.filter((_, i) => i % 3 !== 0);
    model.clear();
    for (const packId of live) for (const e of index.packs().get(packId)!) if (!model.has(e.id)) model.set(e.id, { pack: packId, offset: e.offset });
    check();
    expect(index.packs().size).toBe(live.length);
    expect([...index.packs().keys()]).toEqual(live);
    expect(index.has(hexId('never stored'))).toBe(false);
  });

  it('lists a pack’s entries in the order they were added', () => {
    const index = fresh();
    const entries = [entry('x', 0), entry('y', 8), entry('x', 16)];
    index.add('p1', entries);
    const located = entries.map((e) => ({ ...e, pack: 'p1' }));
    expect(index.packs().get('p1')).toEqual(located);
    expect(index.get(hexId('x'))).toEqual(located[0]);
    expect([...index.packs()]).toEqual([['p1', located]]);
  });

  it('refuses ids that are not 64 hex digits and fields that are not u32, adding nothing', () => {
    const index = fresh();
    expect(() => index.add('p', [{ id: 'not-an-id', offset: 0, length: 1, rawLength: 1 }])).toThrow(/malformed/);
    expect(() => index.add('p', [{ id: hexId(1).toUpperCase(), offset: 0, length: 1, rawLength: 1 }])).toThrow(/malformed/);
    expect(() => index.add('p', [{ ...entry(1, 0), offset: -1 }])).toThrow(/malformed/);
    expect(() => index.add('p', [{ ...entry(1, 0), length: 2 ** 32 }])).toThrow(/malformed/);
    expect(index.packs().size).toBe(0);
    expect(index.has('not-an-id')).toBe(false);
    expect(index.get(hexId(1).slice(0, 63))).toBeUndefined();
  });

  it('marks an index object with a malformed entry as damaged and takes nothing from it', async () => {
    const store = new MemoryObjectStore();
    const codec = new ChunkCodec(undefined, undefined);
    const good = hexId('good-index');
    const bad = hexId('bad-index');
    const [pa, pb] = [hexId('pack-a'), hexId('pack-b')];
    await store.put(`index/${good}`, encodeDocument(codec, { version: 2, packs: [[pa, [[hexId(1), 0, 10, 10]]]] }, indexLabel(good)));
    await store.put(`index/${bad}`, encodeDocument(codec, { version: 2, packs: [[pb, [[hexId(2), 0, 10, 10], ['zz', 0, 10, 10]]]] }, indexLabel(bad)));
    const index = new ChunkIndex(store, codec);
    await index.refresh();
    expect([...index.damaged]).toEqual([bad]);
    expect(index.has(hexId(1))).toBe(true);
    expect(index.has(hexId(2))).toBe(false);
    expect([...index.packs().keys()]).toEqual([pa]);
  });

  it('re-adding a known pack replaces its entries', () => {
    const index = fresh();
    index.add('p', [entry(1, 0), entry(2, 8)]);
    index.add('p', [entry(3, 0)]);
    expect(index.has(hexId(1))).toBe(false);
    expect(index.get(hexId(3))?.pack).toBe('p');
    expect(index.chunkCount).toBe(1);
  });
});
