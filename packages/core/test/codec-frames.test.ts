import { describe, expect, it, vi } from 'vitest';
import { ChunkCodec, decodeDocument, encodeDocument, openDocument } from '../src/repository/codec.js';

/** Runs `fn`, returning the bytes it asked Buffer.allocUnsafe(Slow) for, in all. */
function totalAllocated(fn: () => void): number {
  let total = 0;
  const spies = (['allocUnsafe', 'allocUnsafeSlow'] as const).map((name) => {
    const original = Buffer[name].bind(Buffer);
    return vi.spyOn(Buffer, name).mockImplementation((n: number) => {
      total += n;
      return original(n);
    });
  });
  try {
    fn();
  } finally {
    for (const s of spies) s.mockRestore();
  }
  return total;
}

/** A zstd frame that announces no content size and holds `text` (at most 128 KiB) as one raw (last) block. */
function bareFrame(text: Buffer): Buffer {
  const header = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00 /* no content size, not single segment */, 0x38 /* 128 KiB window */, 0, 0, 0]);
  header.writeUIntLE((text.length << 3) | 1, 6, 3); // raw block, last
  return Buffer.concat([header, text]);
}

describe('pipeline: documents whose frames announce no size', () => {
  it('many small frames cost memory in proportion to their text, not to frames × stored size', () => {
    const codec = new ChunkCodec(undefined, undefined);
    // 20,000 frames of 8 bytes of JSON text each: a 360 KB document of 160 KB of text.
    const text = Buffer.from(JSON.stringify({ pad: 'x'.repeat(20_000 * 8 - 10) }));
    expect(text.length % 8).toBe(0);
    const frames = Buffer.concat(Array.from({ length: text.length / 8 }, (_, i) => bareFrame(text.subarray(i * 8, i * 8 + 8))));
    const blob = codec.seal(1, frames, 'manifest:b');
    let opened: Buffer | undefined;
    const allocated = totalAllocated(() => (opened = openDocument(codec, blob, 'manifest:b')));
    expect(opened!.equals(text)).toBe(true);
    // Room for the text, one stream buffer and the joined result: a few times the text at most.
    expect(allocated).toBeLessThan(4 * text.length + 1024 * 1024);
  });

  it('still opens the documents Cairn writes, and a frame without a size split anywhere', () => {
    const codec = new ChunkCodec(undefined, undefined);
    const doc = { version: 2, packs: Array.from({ length: 3000 }, (_, i) => [String(i).padStart(64, '0'), [[String(i).padStart(64, 'a'), i, 10, 20]]]) };
    expect(decodeDocument(codec, encodeDocument(codec, doc, 'index:x'), 'index:x')).toEqual(doc);
    const text = Buffer.from(JSON.stringify(doc));
    const cuts = [0, 1, 100_000, 100_001];
    while (cuts.at(-1)! < text.length) cuts.push(Math.min(cuts.at(-1)! + 100_000, text.length));
    const frames = Buffer.concat(cuts.slice(1).map((end, i) => bareFrame(text.subarray(cuts[i], end))));
    expect(openDocument(codec, codec.seal(1, frames, 'index:x'), 'index:x').equals(text)).toBe(true);
  });
});
