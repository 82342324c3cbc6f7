import { describe, expect, it } from 'vitest';
import { isZero } from '../src/util/zero-bytes.js';

// isZero (util/zero-bytes.ts) is the tree's one zero test: the repository's chunk worker (on views
// of shared memory), the memory backup service, volume-file's zero scan, the CLI's import writers
// and archive scan. It compares in slices against a shared zero buffer, by offsets into its
// argument, so every length and position must be covered: slice boundaries, the last byte, lengths
// that are no multiple of the slice, views into a larger buffer, views of shared memory.

const SLICE = 64 * 1024;
const LENGTHS = [0, 1, 2, 511, SLICE - 1, SLICE, SLICE + 1, 3 * SLICE + 7, 4 * 1024 * 1024, 4 * 1024 * 1024 + 3];

describe('isZero', () => {
  it('is true for zeros of any length, as a Buffer and as a view at an odd offset of a larger buffer', () => {
    for (const length of LENGTHS) {
      expect(isZero(Buffer.alloc(length)), `${length}`).toBe(true);
      const outer = Buffer.alloc(length + 10, 0xff);
      outer.fill(0, 3, 3 + length);
      expect(isZero(new Uint8Array(outer.buffer, outer.byteOffset + 3, length)), `view of ${length}`).toBe(true);
    }
  });

  it('is false for a single non-zero byte at any slice boundary, the first and the last byte, of every length', () => {
    for (const length of LENGTHS.filter((n) => n > 0)) {
      const positions = new Set([0, length - 1, length >> 1]);
      for (let b = SLICE; b < length; b += SLICE) for (const p of [b - 1, b, b + 1]) if (p < length) positions.add(p);
      const buf = Buffer.alloc(length);
      for (const p of positions) {
        for (const value of [1, 0x80, 0xff]) {
          buf[p] = value;
          expect(isZero(buf), `byte ${p} of ${length} is ${value}`).toBe(false);
          buf[p] = 0;
        }
      }
      expect(isZero(buf), `${length} zeroed again`).toBe(true);
    }
  });

  it('is false for a non-zero byte in a view, and ignores non-zero bytes around the view', () => {
    const outer = Buffer.alloc(3 * SLICE + 20, 0x11);
    const view = outer.subarray(5, 5 + 2 * SLICE + 9);
    view.fill(0);
    expect(isZero(view)).toBe(true);
    view[view.length - 1] = 7;
    expect(isZero(view)).toBe(false);
    expect(isZero(new Uint8Array(view.buffer, view.byteOffset, view.length - 1))).toBe(true);
  });

  it('reads a view of shared memory (as the chunk worker passes it) by its own offsets', () => {
    const shared = new SharedArrayBuffer(4 * SLICE + 64);
    const outer = Buffer.from(shared);
    outer.fill(0x5a);
    const view = Buffer.from(shared, 32, 2 * SLICE + 1);
    view.fill(0);
    expect(isZero(view)).toBe(true);
    for (const p of [0, SLICE, 2 * SLICE]) {
      view[p] = 1;
      expect(isZero(view), `byte ${p}`).toBe(false);
      view[p] = 0;
    }
  });
});
