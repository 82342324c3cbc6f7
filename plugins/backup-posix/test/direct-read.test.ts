import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIRECT_IO_ALIGN, alignedBuffer } from '@cairn/core';
import type { PosixObjectStore } from '../src/index.js';
import { tempStore } from './helpers.js';

/** Bytes of `path` in the page cache (util-linux's fincore). */
const cached = (path: string): number => Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' }).trim());
/** Writes `path` back and drops it from the page cache (GNU dd's nocache). */
const evict = (path: string): void => {
  execFileSync('sync', [path]);
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
};

/** `into` laid out as getInto's `once` wants it: in an aligned buffer, at the offset's alignment, with room around. */
const laidOut = (offset: number, length: number): Buffer => {
  const shift = offset % DIRECT_IO_ALIGN;
  return alignedBuffer(length + 2 * DIRECT_IO_ALIGN).subarray(shift, shift + length);
};

describe('getInto with `once`: O_DIRECT reads that leave the page cache alone', () => {
  let store: PosixObjectStore;
  const key = `packs/${'d1'.repeat(32)}`;
  const data = randomBytes(3 * 1024 * 1024 + 1234); // ends off a block boundary
  const ranges: [number, number][] = [
    [0, 4096],
    [5000, 70_000],
    [1_000_001, 1_048_576],
    [data.length - 3000, 3000], // the rounded end lies past the file's end
    [0, data.length],
  ];
  beforeAll(async () => {
    store = await tempStore('direct');
    await store.put(key, data);
  });
  afterAll(async () => rm(store.directory, { recursive: true, force: true }));

  it('returns the exact bytes of every range without bringing the file into the page cache; a plain getInto does', async () => {
    const path = store.pathOf(key);
    evict(path);
    expect(cached(path)).toBe(0);
    for (const [offset, length] of ranges) {
      const into = laidOut(offset, length);
      await store.getInto(key, { offset, length }, into, { once: true });
      expect(into.equals(data.subarray(offset, offset + length)), `range ${offset}+${length}`).toBe(true);
    }
    expect(cached(path)).toBe(0);
    const into = Buffer.alloc(70_000);
    await store.getInto(key, { offset: 5000, length: 70_000 }, into); // the control: buffered
    expect(into.equals(data.subarray(5000, 75_000))).toBe(true);
    expect(cached(path)).toBeGreaterThan(0);
  });

  it('with `into` not laid out for it (plain memory, or off the offset\'s alignment), reads buffered and gets the same bytes', async () => {
    const [offset, length] = [5000, 70_000];
    const plain = Buffer.alloc(length);
    const misplaced = alignedBuffer(length + 2 * DIRECT_IO_ALIGN).subarray(17, 17 + length);
    for (const into of [plain, misplaced]) {
      into.fill(0);
      await store.getInto(key, { offset, length }, into, { once: true });
      expect(into.equals(data.subarray(offset, offset + length))).toBe(true);
    }
  });

  it('with `into` longer than the range, writes only `into[0, range.length)`: the rest of `into` keeps its bytes', async () => {
    const path = store.pathOf(key);
    evict(path);
    for (const [offset, length] of [[5000, 70_000], [0, 100], [4096 + 10, 4000], [data.length - 3000, 2000]] as const) {
      const extra = 2 * DIRECT_IO_ALIGN;
      const shift = offset % DIRECT_IO_ALIGN;
      const into = alignedBuffer(length + extra + 2 * DIRECT_IO_ALIGN).subarray(shift, shift + length + extra);
      into.fill(0xee);
      await store.getInto(key, { offset, length }, into, { once: true });
      expect(into.subarray(0, length).equals(data.subarray(offset, offset + length)), `range ${offset}+${length}`).toBe(true);
      expect(into.subarray(length).every((b) => b === 0xee), `past range ${offset}+${length}`).toBe(true);
    }
    expect(cached(path)).toBe(0); // still read with O_DIRECT
  });

  it('fails as get does: NOT_FOUND for a missing key, INVALID_INPUT past the end', async () => {
    await expect(store.getInto(`packs/${'d2'.repeat(32)}`, { offset: 0, length: 4096 }, laidOut(0, 4096), { once: true })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(store.getInto(key, { offset: data.length - 100, length: 200 }, laidOut(data.length - 100, 200), { once: true })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });
});
