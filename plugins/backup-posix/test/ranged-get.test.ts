import { existsSync, readFileSync } from 'node:fs';
import { open, rm, truncate } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { tempStore } from './helpers.js';

// Bytes this process has read through read(2)-family calls, all threads included (Linux).
const HAS_PROC_IO = existsSync('/proc/self/io');
const rchar = (): number => Number(/rchar:\s*(\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);

const SPARSE_SIZE = 256 * 1024 * 1024;
const MARK_AT = 200 * 1024 * 1024 + 12345;
const MARK = Buffer.from('the bytes at 200 MiB + 12345');

describe.skipIf(!HAS_PROC_IO)('get(range) reads only the range (counted by /proc/self/io rchar; needs Linux)', () => {
  let store: PosixObjectStore;
  const sparse = `data/${'5a'.repeat(32)}`;
  beforeAll(async () => {
    store = await tempStore('ranged');
    // A 256 MiB object: put a small one, then extend the file sparsely and mark one spot.
    await store.put(sparse, Buffer.from('head'));
    await truncate(store.pathOf(sparse), SPARSE_SIZE);
    const fh = await open(store.pathOf(sparse), 'r+');
    await fh.write(MARK, 0, MARK.length, MARK_AT);
    await fh.close();
  });
  afterAll(async () => rm(store.directory, { recursive: true, force: true }));

  it('get(256 MiB object, 4 KiB range) returns the range and reads under 1 MiB in total', async () => {
    expect((await store.head(sparse)).size).toBe(SPARSE_SIZE);
    const before = rchar();
    const got = await store.get(sparse, { offset: MARK_AT - 100, length: 4096 });
    const read = rchar() - before;
    expect(got.subarray(100, 100 + MARK.length).equals(MARK)).toBe(true);
    expect(got.subarray(0, 100).equals(Buffer.alloc(100))).toBe(true);
    expect(got.length).toBe(4096);
    expect(read).toBeGreaterThanOrEqual(4096);
    expect(read).toBeLessThan(1024 * 1024);
  });

  it('get(object) without a range reads the whole object (the meter counts reads)', async () => {
    const key = 'whole/16m';
    await store.put(key, Buffer.alloc(16 * 1024 * 1024, 9));
    const before = rchar();
    const got = await store.get(key);
    expect(rchar() - before).toBeGreaterThanOrEqual(16 * 1024 * 1024);
    expect(got.length).toBe(16 * 1024 * 1024);
  });

  it('get(range) past the end of the object fails with INVALID_INPUT; a range ending exactly at the end succeeds', async () => {
    await expect(store.get(sparse, { offset: SPARSE_SIZE - 10, length: 11 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(store.get(sparse, { offset: SPARSE_SIZE, length: 1 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(store.get(sparse, { offset: -1, length: 1 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect((await store.get(sparse, { offset: SPARSE_SIZE - 10, length: 10 })).length).toBe(10);
    expect((await store.get(sparse, { offset: SPARSE_SIZE, length: 0 })).length).toBe(0);
  });
});
