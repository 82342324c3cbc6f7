import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore } from '../src/index.js';
import { ChunkCodec, encodeDocument } from '../src/repository/codec.js';
import { ChunkIndex, indexLabel } from '../src/repository/chunk-index.js';
import { scanIndexDocument } from '../src/repository/index-scan.js';
import { BlobType } from '../src/repository/format.js';

const hexId = (label: string | number): string => createHash('sha256').update(String(label)).digest('hex');
const bytes = (doc: unknown, space?: number) => Buffer.from(JSON.stringify(doc, null, space));
const v2 = {
  version: 2,
  packs: [
    [hexId('p1'), [[hexId(1), 0, 100, 4096], [hexId(2), 104, 4294967295, 0]]],
    [hexId('p2'), []],
    [hexId('p3'), [[hexId(3), 7, 8, 9]]],
  ],
};

describe('scanIndexDocument', () => {
  it('reads version 2 and version 1 documents as JSON.stringify writes them', () => {
    const s = scanIndexDocument(bytes(v2), 'unused')!;
    expect(s.version).toBe(2);
    expect(s.packs).toEqual([
      { packId: hexId('p1'), count: 2 },
      { packId: hexId('p2'), count: 0 },
      { packId: hexId('p3'), count: 1 },
    ]);
    expect(Buffer.from(s.ids).toString('hex')).toBe(hexId(1) + hexId(2) + hexId(3));
    expect([...s.fields]).toEqual([0, 100, 4096, 104, 4294967295, 0, 7, 8, 9]);
    const v1 = scanIndexDocument(bytes({ version: 1, blobs: [[hexId(5), 1, 2, 3]] }), hexId('pack'))!;
    expect(v1.packs).toEqual([{ packId: hexId('pack'), count: 1 }]);
    expect([...v1.fields]).toEqual([1, 2, 3]);
    expect(scanIndexDocument(bytes({ version: 2, packs: [] }), 'x')).toMatchObject({ packs: [] });
  });

  it('answers undefined for any other form, so the caller parses it as JSON', () => {
    const other = [
      bytes(v2, 1), // whitespace
      bytes({ packs: v2.packs, version: 2 }), // key order
      bytes({ version: 2, packs: [[hexId('p'), [[hexId(1).toUpperCase(), 0, 1, 1]]]] }),
      bytes({ version: 2, packs: [['short-pack-id', [[hexId(1), 0, 1, 1]]]] }),
      bytes({ version: 2, packs: [[hexId('p'), [[hexId(1), 2 ** 32, 1, 1]]]] }),
      bytes({ version: 2, packs: [[hexId('p'), [[hexId(1), -1, 1, 1]]]] }),
      bytes({ version: 2, packs: [[hexId('p'), [[hexId(1), 1.5, 1, 1]]]] }),
      bytes({ version: 2, packs: [[hexId('p'), [[hexId(1), 1, 1]]]] }),
      bytes({ version: 3, packs: [] }),
      Buffer.from(JSON.stringify(v2).replace(',100,', ',0100,')),
      Buffer.concat([bytes(v2), Buffer.from(' ')]),
    ];
    for (const json of other) expect(scanIndexDocument(json, 'x'), json.toString().slice(0, 120)).toBeUndefined();
    // Every truncation of a valid document is refused, never misread.
    const whole = bytes(v2);
    for (let n = 0; n < whole.length; n++) expect(scanIndexDocument(whole.subarray(0, n), 'x')).toBeUndefined();
  });

  it('ChunkIndex loads a scanned document and the same document reformatted alike', async () => {
    const codec = new ChunkCodec(undefined, undefined);
    const loaded = [];
    for (const space of [undefined, 2]) {
      const store = new MemoryObjectStore();
      const id = hexId('index');
      // encodeDocument writes JSON.stringify's form; a reformatted one is sealed by hand.
      await store.put(`index/${id}`, space ? codec.seal(BlobType.zstd, (await import('zstd-napi')).compress(bytes(v2, space)), indexLabel(id)) : encodeDocument(codec, v2, indexLabel(id)));
      const index = new ChunkIndex(store, codec);
      await index.refresh();
      expect(index.damaged.size).toBe(0);
      loaded.push([...index.packs()]);
    }
    expect(loaded[0]).toEqual(loaded[1]);
    expect(loaded[0]!.map(([p, e]) => [p, e.length])).toEqual([[hexId('p1'), 2], [hexId('p2'), 0], [hexId('p3'), 1]]);
  });
});
