import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it, vi } from 'vitest';
import { ChunkCodec, decodeDocument, DOCUMENT_EXPANSION, documentLimit, encodeDocument, jsonPieces, MAX_DOCUMENT_BYTES, openDocument } from '../src/repository/codec.js';

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

describe('document size bound', () => {
  const binding = createRequire(import.meta.url)('zstd-napi/binding') as {
    CCtx: new () => { setParameter(p: number, v: number): void; setPledgedSrcSize(n: number): void; compressStream2(dst: Uint8Array, src: Uint8Array, op: number): [number, number, number] };
    CParameter: { compressionLevel: number; contentSizeFlag: number };
    EndDirective: { continue: number; end: number };
  };
  const codec = new ChunkCodec(undefined, undefined);

  /** One zstd frame of `repeat` times `piece`, streamed (never whole in memory); with `announce`, its header records the size. */
  function frameOf(piece: Buffer, repeat: number, announce: boolean): Buffer {
    const c = new binding.CCtx();
    c.setParameter(binding.CParameter.compressionLevel, 1);
    if (announce) c.setPledgedSrcSize(piece.length * repeat);
    else c.setParameter(binding.CParameter.contentSizeFlag, 0);
    const room = Buffer.alloc(1 << 17);
    const out: Buffer[] = [];
    const drain = (src: Buffer, op: number): number => {
      const [left, written, taken] = c.compressStream2(room, src, op);
      out.push(Buffer.from(room.subarray(0, written)));
      return op === binding.EndDirective.end ? left : src.length - taken;
    };
    for (let i = 0; i < repeat; i++) for (let src = piece; src.length > 0; ) src = src.subarray(src.length - drain(src, binding.EndDirective.continue));
    while (drain(Buffer.alloc(0), binding.EndDirective.end) > 0);
    return Buffer.concat(out);
  }

  /** Runs `fn`, returning the largest Buffer.allocUnsafe(Slow) request it made (none beyond `refuseOver` is served). */
  function largestAllocation(fn: () => void, refuseOver: number): number {
    let largest = 0;
    const spies = (['allocUnsafe', 'allocUnsafeSlow'] as const).map((name) => {
      const original = Buffer[name].bind(Buffer);
      return vi.spyOn(Buffer, name).mockImplementation((n: number) => {
        largest = Math.max(largest, n);
        if (n > refuseOver) throw new RangeError(`test refused to allocate ${n} bytes`);
        return original(n);
      });
    });
    try {
      fn();
    } finally {
      for (const s of spies) s.mockRestore();
    }
    return largest;
  }

  it('a frame header announcing more than the limit is CORRUPT, refused before anything is allocated for it', () => {
    // magic | descriptor (8-byte content size, single segment) | content size | one raw last block
    const body = Buffer.from('{"version":2,"packs":[]}');
    const frame = Buffer.alloc(16 + body.length);
    frame.writeUInt32LE(0xfd2fb528, 0);
    frame[4] = 0xe0;
    frame.writeBigUInt64LE(3n << 30n, 5);
    frame.writeUIntLE((body.length << 3) | 1, 13, 3);
    body.copy(frame, 16);
    const blob = codec.seal(1, frame, 'index:x');
    expect(documentLimit(blob.length)).toBe(MAX_DOCUMENT_BYTES);
    let error: unknown;
    const largest = largestAllocation(() => {
      try {
        openDocument(codec, blob, 'index:x');
      } catch (err) {
        error = err;
      }
    }, MAX_DOCUMENT_BYTES);
    expect(error).toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(/index:x is damaged: its frames announce 3221225472 bytes/) });
    expect(largest).toBeLessThanOrEqual(1024);
  });

  for (const announce of [true, false]) {
    it(`a valid frame that decompresses past the limit (${announce ? 'announcing its size' : 'announcing none'}) is CORRUPT, and no more than the limit is allocated`, () => {
      const blob = codec.seal(1, frameOf(Buffer.alloc(1 << 20, 0x20), MAX_DOCUMENT_BYTES / (1 << 20) + 1, announce), 'manifest:b');
      expect(blob.length * DOCUMENT_EXPANSION).toBeLessThan(MAX_DOCUMENT_BYTES);
      let error: unknown;
      const largest = largestAllocation(() => {
        try {
          openDocument(codec, blob, 'manifest:b');
        } catch (err) {
          error = err;
        }
      }, MAX_DOCUMENT_BYTES + 1);
      expect(error).toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(/more than the 268435456 bytes of text it may hold/) });
      expect(largest).toBeLessThanOrEqual(MAX_DOCUMENT_BYTES + 1);
    });
  }

  it('frames that announce no size open in steps, several of them concatenated; a truncated one is CORRUPT and later documents still open', () => {
    const doc = { version: 2, chunks: Array.from({ length: 9000 }, (_, i) => hexId(i)) };
    const json = Buffer.from(JSON.stringify(doc));
    const half = json.length >> 1;
    const frames = Buffer.concat([frameOf(json.subarray(0, half), 1, false), frameOf(json.subarray(half), 1, false)]);
    expect(zstd.getFrameContentSize(frames)).toBeNull();
    for (const c of [codec, new ChunkCodec(randomBytes(32), randomBytes(32))]) {
      expect(openDocument(c, c.seal(1, frames, 'manifest:b'), 'manifest:b').equals(json)).toBe(true);
      expect(() => openDocument(c, c.seal(1, frames.subarray(0, frames.length - 9), 'manifest:b'), 'manifest:b')).toThrow(expect.objectContaining({ code: 'CORRUPT' }));
      // The truncated frame left no state behind (zstd-napi's shared decompressor did: every later document failed).
      expect(decodeDocument(c, encodeDocument(c, doc, 'manifest:b'), 'manifest:b')).toEqual(doc);
      expect(openDocument(c, c.seal(1, frames, 'manifest:b'), 'manifest:b').equals(json)).toBe(true);
    }
  });

  it('documents of any size the rule allows still open: a sparse inline chunk list compresses far beyond the expansion factor', () => {
    const chunks: (string | null)[] = Array.from({ length: 200_000 }, () => null);
    for (let i = 0; i < chunks.length; i += 1000) chunks[i] = hexId(i);
    const blob = encodeDocument(codec, { version: 3, chunks }, 'manifest:b', 'chunks');
    expect(blob.length * DOCUMENT_EXPANSION).toBeLessThan(JSON.stringify({ version: 3, chunks }).length); // the floor is what admits it
    expect(decodeDocument<{ chunks: unknown[] }>(codec, blob, 'manifest:b').chunks).toEqual(chunks);
  });
});
