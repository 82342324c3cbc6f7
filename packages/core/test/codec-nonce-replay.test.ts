import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ChunkCodec, decodeDocument, encodeDocument } from '../src/repository/codec.js';

const NONCE = 12;

/**
 * A copy of a codec's memory, as a VM restored twice from one snapshot (or a process image
 * duplicated any other way) holds: the same keys and the same not-yet-used nonces in its pool.
 */
function replica(codec: ChunkCodec): ChunkCodec {
  const copy = Object.assign(Object.create(ChunkCodec.prototype) as ChunkCodec, codec);
  const state = copy as unknown as { nonces: Buffer };
  state.nonces = Buffer.from(state.nonces);
  return copy;
}

/** Two different chunks of `n` bytes that do not compress. */
const chunks = (n: number): [Buffer, Buffer] => [randomBytes(n), randomBytes(n)];

/**
 * AES-GCM under one key must never use one nonce for two different plaintexts: the XOR of the
 * plaintexts and the authentication key leak, and blobs can be forged. Nonces are random, drawn
 * in pools; two copies of one process image (a VM snapshot restored twice) replay the same pool.
 * What they then seal differently must still get different nonces.
 */
describe('blob nonces when the random pool is replayed (VM snapshot restored twice)', () => {
  it('two replicas sealing different chunks use different nonces, and both blobs open', () => {
    const keys = [randomBytes(32), randomBytes(32)] as const;
    const original = new ChunkCodec(...keys);
    original.encode(randomBytes(1000), 'none', original.chunkId(randomBytes(8))); // the pool is filled: the snapshot holds it
    const twin = replica(original);
    const [a, b] = chunks(64 * 1024);
    for (const algorithm of ['none', 'zstd'] as const) {
      const blobA = original.encode(a, algorithm, original.chunkId(a));
      const blobB = twin.encode(b, algorithm, twin.chunkId(b));
      expect(blobA.subarray(0, NONCE).equals(blobB.subarray(0, NONCE)), `${algorithm}: nonce reused for another chunk`).toBe(false);
      const reader = new ChunkCodec(...keys);
      for (const [data, blob] of [[a, blobA], [b, blobB]] as const) {
        const out = Buffer.alloc(data.length);
        reader.decodeInto(blob, reader.chunkId(data), out);
        expect(out.equals(data)).toBe(true);
      }
    }
  });

  it('two replicas sealing different documents under one label use different nonces, and both open', () => {
    const keys = [randomBytes(32), randomBytes(32)] as const;
    const original = new ChunkCodec(...keys);
    encodeDocument(original, { warm: true }, 'catalog:x');
    const twin = replica(original);
    // A catalog record rewritten under its label (a state change), by each replica.
    const docA = { id: 'r', state: 'available', pad: randomBytes(64).toString('hex') };
    const docB = { id: 'r', state: 'error', pad: randomBytes(64).toString('hex') };
    const blobA = encodeDocument(original, docA, 'catalog:r');
    const blobB = encodeDocument(twin, docB, 'catalog:r');
    expect(blobA.subarray(0, NONCE).equals(blobB.subarray(0, NONCE)), 'nonce reused for another document').toBe(false);
    const reader = new ChunkCodec(...keys);
    expect(decodeDocument(reader, blobA, 'catalog:r')).toEqual(docA);
    expect(decodeDocument(reader, blobB, 'catalog:r')).toEqual(docB);
  });

  it('one codec never repeats a nonce over more than a pool of blobs', () => {
    const codec = new ChunkCodec(randomBytes(32), randomBytes(32));
    const data = randomBytes(64);
    const id = codec.chunkId(data);
    const seen = new Set<string>();
    for (let i = 0; i < 3000; i++) seen.add(codec.encode(data, 'none', id).subarray(0, NONCE).toString('hex'));
    expect(seen.size).toBe(3000);
  });
});
