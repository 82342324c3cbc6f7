import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { ChunkCodec, decodeDocument, encodeDocument, jsonPieces } from '../src/repository/codec.js';

const zstd = createRequire(import.meta.url)('zstd-napi/binding') as { getFrameContentSize(b: Uint8Array): number | null };
const hexId = (i: number): string => createHash('sha256').update(String(i)).digest('hex');

describe('metadata documents', () => {
  const manifestLike = (n: number) => ({ version: 2, backupId: 'b', parentId: undefined, chunks: Array.from({ length: n }, (_, i) => (i % 3 === 0 ? null : hexId(i))), stats: { a: 1 } });

  it('jsonPieces joins to JSON that parses to the same document, the bulk array a slice at a time', () => {
    for (const n of [0, 1, 4096, 4097, 10000]) {
      const doc = manifestLike(n);
      const pieces = [...jsonPieces(doc, 'chunks')];
      expect(JSON.parse(pieces.join(''))).toEqual(JSON.parse(JSON.stringify(doc)));
      expect(Math.max(...pieces.map((p) => p.length))).toBeLessThanOrEqual(4096 * 67 + 1);
    }
    expect([...jsonPieces({ chunks: [1, 2] }, 'chunks')].join('')).toBe('{"chunks":[1,2]}');
    expect([...jsonPieces({ a: 'x' }, 'chunks')].join('')).toBe('{"a":"x"}'); // no such array: one piece
    expect([...jsonPieces([1, 2], 'chunks')].join('')).toBe('[1,2]');
  });

  for (const encrypted of [false, true]) {
    it(`encodeDocument round-trips through decodeDocument${encrypted ? ' (encrypted)' : ''}, with or without a bulk field`, () => {
      const codec = encrypted ? new ChunkCodec(randomBytes(32), randomBytes(32)) : new ChunkCodec(undefined, undefined);
      const doc = manifestLike(20000);
      const expected = JSON.parse(JSON.stringify(doc));
      expect(decodeDocument(codec, encodeDocument(codec, doc, 'manifest:b', 'chunks'), 'manifest:b')).toEqual(expected);
      expect(decodeDocument(codec, encodeDocument(codec, doc, 'manifest:b'), 'manifest:b')).toEqual(expected);
      // Sealed documents are bound to their label.
      if (encrypted) expect(() => decodeDocument(codec, encodeDocument(codec, doc, 'manifest:b', 'chunks'), 'manifest:other')).toThrow(/damaged/);
    });
  }

  it('writes one zstd frame that records its content size', () => {
    const codec = new ChunkCodec(undefined, undefined);
    const doc = manifestLike(9000);
    const blob = encodeDocument(codec, doc, 'x', 'chunks');
    const json = [...jsonPieces(doc, 'chunks')].join('');
    expect(zstd.getFrameContentSize(blob.subarray(1))).toBe(Buffer.byteLength(json));
  });
});

describe('chunk envelopes', () => {
  it('every sealed blob and document gets a nonce of its own, across refills of the nonce pool', () => {
    const codec = new ChunkCodec(randomBytes(32), randomBytes(32));
    const data = Buffer.alloc(4096, 'same chunk ');
    const id = codec.chunkId(data);
    const room = Buffer.alloc(ChunkCodec.encodeRoom(data.length));
    const nonces = new Set<string>();
    for (let i = 0; i < 2500; i++) {
      const n = i % 2 === 0 ? codec.encodeInto(data, 'zstd', id, room) : codec.seal(1, data, 'label').copy(room);
      nonces.add(room.subarray(0, 12).toString('hex'));
      if (i === 2499) expect(n).toBeGreaterThan(12);
    }
    expect(nonces.size).toBe(2500);
    // Fresh codecs (each worker has its own) draw their own nonces.
    const other = new ChunkCodec(randomBytes(32), randomBytes(32));
    other.encodeInto(data, 'zstd', id, room);
    expect(nonces.has(room.subarray(0, 12).toString('hex'))).toBe(false);
  });

  for (const encrypted of [false, true]) {
    it(`encodeInto/decodeInto round-trip stored, compressed and odd-sized chunks${encrypted ? ', sealed' : ''}; a flipped byte is CORRUPT`, () => {
      const codec = encrypted ? new ChunkCodec(randomBytes(32), randomBytes(32)) : new ChunkCodec(undefined, undefined);
      const samples = [randomBytes(131072), Buffer.alloc(131072, 'text-like '), randomBytes(100_003), Buffer.concat([randomBytes(70_000), Buffer.alloc(61_072, 7)]), randomBytes(1)];
      for (const data of samples) {
        const id = codec.chunkId(data);
        const room = Buffer.alloc(ChunkCodec.encodeRoom(data.length));
        const n = codec.encodeInto(data, 'zstd', id, room);
        expect(n).toBeLessThanOrEqual(ChunkCodec.maxEncodedLength(data.length));
        const out = Buffer.alloc(data.length, 0xee);
        codec.decodeInto(room.subarray(0, n), id, out);
        expect(out.equals(data)).toBe(true);
        const bad = Buffer.from(room.subarray(0, n));
        bad[Math.floor(n / 2)]! ^= 1;
        expect(() => codec.decodeInto(bad, id, Buffer.alloc(data.length))).toThrow(expect.objectContaining({ code: 'CORRUPT' }));
      }
    });
  }
});
