import { afterAll, describe, expect, it } from 'vitest';
import { ChunkCodec } from '../src/repository/codec.js';
import { ChunkProcessor } from '../src/repository/chunk-processor.js';
import { outputBytesPerChunk } from '../src/repository/chunk-tasks.js';

const chunkSize = 64 * 1024;
const settings = { compression: 'zstd' as const, chunkSize, idKey: Buffer.alloc(32, 1), dataKey: Buffer.alloc(32, 2) };

describe('ChunkProcessor on shared memory', () => {
  const pool = new ChunkProcessor(settings, 2);
  const inline = new ChunkProcessor(settings, 0);
  afterAll(async () => pool.close());

  const input = ChunkProcessor.buffer(4 * chunkSize);
  const text = Buffer.from('the quick brown fox jumps over the lazy disk '.repeat(2000));
  text.copy(input, 0, 0, chunkSize); // compressible
  input.fill(0, chunkSize, 2 * chunkSize); // zero
  for (let i = 2 * chunkSize; i < 4 * chunkSize; i++) input[i] = (i * 2654435761) >>> 24; // noisy

  it('process() in workers encodes in place into the caller\'s output; decode() restores every chunk exactly, as inline does', async () => {
    const output = ChunkProcessor.buffer(4 * outputBytesPerChunk(chunkSize));
    const chunks = await pool.process(input, output, [null, null, null, null]);
    expect(chunks.map((c) => c.zero)).toEqual([false, true, false, false]);
    expect(chunks[0]!.encoded!.length).toBeLessThan(chunkSize / 4); // compressed
    expect(chunks[0]!.encoded!.buffer).toBe(output.buffer); // a view, not a copy
    // Every payload (after nonce and type byte) starts on an 8-byte boundary.
    for (const c of chunks.filter((x) => x.encoded)) expect((c.encoded!.byteOffset + 13) % 8).toBe(0);
    // Same ids inline: the id depends only on the bytes and the key.
    const plainOut = Buffer.alloc(4 * ChunkCodec.maxEncodedLength(chunkSize));
    expect((await inline.process(Buffer.from(input), plainOut, [null, null, null, null])).map((c) => c.id)).toEqual(chunks.map((c) => c.id));

    // Lay the blobs out as a pack range and decode them back.
    const encoded = chunks.filter((c) => c.encoded);
    const range = ChunkProcessor.buffer(encoded.reduce((n, c) => n + c.encoded!.length, 0));
    let at = 0;
    const entries = encoded.map((c) => {
      c.encoded!.copy(range, at);
      const e = { offset: at, length: c.encoded!.length, id: c.id!, rawLength: chunkSize };
      at += c.encoded!.length;
      return e;
    });
    const plain = ChunkProcessor.buffer(entries.length * chunkSize);
    const decoded = await pool.decode(range, plain, entries);
    expect(decoded.map((d) => d.error)).toEqual([undefined, undefined, undefined]);
    expect(decoded[0]!.data!.equals(input.subarray(0, chunkSize))).toBe(true);
    expect(decoded[2]!.data!.equals(input.subarray(3 * chunkSize))).toBe(true);

    // A flipped byte is CORRUPT for that chunk only.
    range[entries[1]!.offset + 20]! ^= 1;
    const again = await pool.decode(range, plain, entries);
    expect(again.map((d) => d.error?.code)).toEqual([undefined, 'CORRUPT', undefined]);
  });

  it('a chunk equal to the parent\'s is reported same and not encoded', async () => {
    const output = ChunkProcessor.buffer(4 * outputBytesPerChunk(chunkSize));
    const first = await pool.process(input, output, [null, null, null, null]);
    const second = await pool.process(input, output, first.map((c) => c.id));
    expect(second.map((c) => c.same)).toEqual([true, false, true, true]);
    expect(second.every((c) => c.encoded === null)).toBe(true);
  });

  it('workers refuse memory they cannot share (INTERNAL), and an output region too small fails the batch', async () => {
    await expect(pool.process(Buffer.from(input), ChunkProcessor.buffer(4 * chunkSize * 2), [null, null, null, null])).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(pool.process(input, ChunkProcessor.buffer(chunkSize), [null, null, null, null])).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/too small/) });
    // The failed batch did not take the pool down.
    const ok = await pool.process(input, ChunkProcessor.buffer(4 * outputBytesPerChunk(chunkSize)), [null, null, null, null]);
    expect(ok.filter((c) => c.encoded).length).toBe(3);
  });
});

describe('ChunkProcessor started before its settings are known (keys still being derived)', () => {
  const input = ChunkProcessor.buffer(2 * chunkSize);
  Buffer.from('settled late, encoded the same '.repeat(5000)).copy(input);

  for (const workers of [2, 0]) {
    it(`tasks given before the settings come wait for them, and encode as a pool started with them does (${workers ? 'workers' : 'inline'})`, async () => {
      let give!: (s: typeof settings) => void;
      const late = new ChunkProcessor(new Promise<typeof settings>((resolve) => (give = resolve)), workers);
      const early = new ChunkProcessor(settings, workers);
      try {
        const out = ChunkProcessor.buffer(2 * outputBytesPerChunk(chunkSize));
        const pending = late.process(input, out, [null, null]);
        let settled = false;
        void pending.then(() => (settled = true));
        await new Promise((r) => setTimeout(r, 50));
        expect(settled).toBe(false);
        give(settings);
        const [a, b] = [await pending, await early.process(input, ChunkProcessor.buffer(2 * outputBytesPerChunk(chunkSize)), [null, null])];
        expect(a.map((c) => c.id)).toEqual(b.map((c) => c.id));
        // And what it sealed opens with the settings' keys.
        const codec = new ChunkCodec(settings.idKey, settings.dataKey);
        const plain = Buffer.alloc(chunkSize);
        codec.decodeInto(a[0]!.encoded!, a[0]!.id!, plain);
        expect(plain.equals(input.subarray(0, chunkSize))).toBe(true);
      } finally {
        await Promise.all([late.close(), early.close()]);
      }
    });
  }

  it('when the settings fail (a wrong passphrase), every task fails with that error', async () => {
    const wrong = Object.assign(new Error('wrong passphrase'), { code: 'INVALID_INPUT' });
    const p = new ChunkProcessor(Promise.reject(wrong), 2);
    try {
      await expect(p.process(input, ChunkProcessor.buffer(2 * outputBytesPerChunk(chunkSize)), [null, null])).rejects.toBe(wrong);
    } finally {
      await p.close();
    }
  });
});
