import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { dataExtents } from '../src/data-extents.js';
import { DirtyBitmap } from '../src/dirty-bitmap.js';
import { fsExt } from '../src/native-fs.js';
import { dirPerTest } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('dataExtents', () => {
  const t = dirPerTest();

  it('dataExtents(file) covers every written byte with SEEK_DATA (when fs-ext loads) and with the zero scan', async () => {
    const fh = await open(join(t.dir, 'img'), 'w+');
    try {
      await fh.truncate(16 * MiB);
      const writes = [
        { offset: 0, length: 100 },
        { offset: 3 * MiB + 5, length: 200 * KiB },
        { offset: 16 * MiB - 4 * KiB, length: 4 * KiB },
      ];
      for (const [i, w] of writes.entries()) await fh.write(patternBytes(w.length, i + 1), 0, w.length, w.offset);
      const whole = { offset: 0, length: 16 * MiB };
      const backends = [{ name: 'zero scan', ext: null }, ...(fsExt() ? [{ name: 'SEEK_DATA', ext: fsExt()! }] : [])];
      for (const { name, ext } of backends) {
        const extents = await dataExtents(fh, whole, ext);
        for (const w of writes) {
          assert.ok(extents.some((e) => e.offset <= w.offset && w.offset + w.length <= e.offset + e.length), `${name}: ${JSON.stringify(w)} missing from ${JSON.stringify(extents)}`);
        }
        const total = extents.reduce((n, e) => n + e.length, 0);
        assert.ok(total <= 3 * 64 * KiB + 256 * KiB, `${name}: ${total} bytes reported for ~204 KiB of data`);
        const clipped = await dataExtents(fh, { offset: 3 * MiB, length: MiB }, ext);
        for (const e of clipped) assert.ok(e.offset >= 3 * MiB && e.offset + e.length <= 4 * MiB, `${name}: extent leaves the range`);
        assert.ok(clipped.length > 0, `${name}: the range holds data`);
      }
    } finally {
      await fh.close();
    }
  });

  it('on a file whose size is not a multiple of 4 KiB or 64 KiB, with data up to its last byte, every non-zero byte of any unaligned range is in the extents, and no extent leaves the range', async () => {
    const size = MiB + 3 * 512 + 7; // unaligned even to 512, as a file written by another tool may be
    const fh = await open(join(t.dir, 'img'), 'w+');
    try {
      await fh.truncate(size);
      const writes = [
        { offset: 5, length: 3 },
        { offset: 64 * KiB - 1, length: 2 },
        { offset: 300 * KiB + 17, length: 70 * KiB },
        { offset: size - 1, length: 1 },
      ];
      for (const [i, w] of writes.entries()) await fh.write(patternBytes(w.length, i + 7).fill(0xff, 0, 1), 0, w.length, w.offset);
      const content = Buffer.alloc(size);
      await fh.read(content, 0, size, 0);
      const backends = [{ name: 'zero scan', ext: null }, ...(fsExt() ? [{ name: 'SEEK_DATA', ext: fsExt()! }] : [])];
      const ranges = [
        { offset: 0, length: size },
        { offset: 1, length: size - 1 },
        { offset: 64 * KiB, length: size - 64 * KiB },
        { offset: size - 1, length: 1 },
        { offset: 300 * KiB + 20, length: 5 },
        { offset: 6, length: 64 * KiB - 8 },
      ];
      for (const { name, ext } of backends) {
        for (const range of ranges) {
          const extents = await dataExtents(fh, range, ext);
          for (const e of extents) assert.ok(e.length > 0 && e.offset >= range.offset && e.offset + e.length <= range.offset + range.length, `${name} ${JSON.stringify(range)}: ${JSON.stringify(e)} leaves the range`);
          for (let i = range.offset; i < range.offset + range.length; i++) {
            if (content[i] !== 0) assert.ok(extents.some((e) => e.offset <= i && i < e.offset + e.length), `${name} ${JSON.stringify(range)}: byte ${i} missing from ${JSON.stringify(extents)}`);
          }
        }
      }
    } finally {
      await fh.close();
    }
  });
});

describe('DirtyBitmap', () => {
  it('mark() sets every granule a range touches and extents() merges them, clipped to the size', () => {
    const b = DirtyBitmap.empty(10 * 64 * KiB - 512, 64 * KiB);
    b.mark(64 * KiB - 1, 2);
    b.mark(9 * 64 * KiB + 10, 1);
    assert.deepEqual(b.extents(), [
      { offset: 0, length: 128 * KiB },
      { offset: 9 * 64 * KiB, length: 64 * KiB - 512 },
    ]);
  });

  it('grow() marks the new tail as changed', () => {
    const b = DirtyBitmap.empty(64 * KiB, 64 * KiB);
    b.grow(256 * KiB);
    assert.deepEqual(b.extents(), [{ offset: 64 * KiB, length: 192 * KiB }]);
  });

  it('parse(serialize()) round-trips, and a flipped bit, wrong size or wrong granularity yields undefined', () => {
    const b = DirtyBitmap.empty(MiB, 64 * KiB);
    b.mark(5 * 64 * KiB, 1);
    const bytes = b.serialize();
    assert.deepEqual(DirtyBitmap.parse(bytes, MiB, 64 * KiB)?.extents(), b.extents());
    assert.equal(DirtyBitmap.parse(bytes, 2 * MiB, 64 * KiB), undefined);
    assert.equal(DirtyBitmap.parse(bytes, MiB, 4 * KiB), undefined);
    const flipped = Buffer.from(bytes);
    flipped[flipped.length - 1] ^= 1;
    assert.equal(DirtyBitmap.parse(flipped, MiB, 64 * KiB), undefined);
  });
});
