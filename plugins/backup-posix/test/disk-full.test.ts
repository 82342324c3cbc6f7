import { statfs } from 'node:fs/promises';
import { TmpfsMounts } from '@cairn/conformance';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
import { allFiles, listKeys } from './helpers.js';

// A real full disk: a 1 MiB tmpfs (and one with few inodes), mounted when we may (root). Mounted
// in the group's beforeAll, not at the module's top level: a run that filters this group out (-t)
// runs neither its beforeAll nor its afterAll, so a top-level mount was left mounted.
const tmpfs = new TmpfsMounts('cairn-posix-full-');

const freeBlocks = async (dir: string): Promise<number> => (await statfs(dir)).bfree;
const temps = async (dir: string): Promise<string[]> => (await allFiles(dir)).filter((f) => f.includes('~'));

describe('a full disk (1 MiB tmpfs)', () => {
  let small: string | undefined;
  let fewInodes: string | undefined;
  beforeAll(() => {
    small = tmpfs.mount('size=1m,mode=0700');
    fewInodes = small ? tmpfs.mount('size=4m,nr_inodes=12,mode=0700') : undefined;
    if (!small) console.warn(`disk-full tests skipped: cannot mount a tmpfs (${tmpfs.error})`);
  });
  afterAll(() => tmpfs.unmountAll());
  afterEach(() => tmpfs.empty());

  it('put(2 MiB) on a 1 MiB filesystem fails with UNAVAILABLE, leaves no object and no temporary file, and frees every block it took', async (ctx) => {
    if (!small) return ctx.skip();
    const store = await PosixObjectStore.open({ directory: small!, createDirectory: false });
    await store.put('data/placeholder', Buffer.from('so the directory exists'));
    const free = await freeBlocks(small!);
    const key = `data/${'e1'.repeat(32)}`;
    await store.put(`data/${'e1'.repeat(31)}00`, Buffer.from('shard dir exists too'));
    const freeWithShard = await freeBlocks(small!);
    await expect(store.put(key, Buffer.alloc(2 * 1024 * 1024, 7))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(store.head(key)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await temps(small!)).toEqual([]);
    expect(await freeBlocks(small!)).toBe(freeWithShard);
    expect(free).toBeGreaterThanOrEqual(freeWithShard);
    // The space really is back: an object of most of the disk fits now.
    await store.put(key, Buffer.alloc(700 * 1024, 8));
    expect((await store.head(key)).size).toBe(700 * 1024);
  });

  it('put replacing an object with one too large for the disk fails with UNAVAILABLE and keeps the old object whole', async (ctx) => {
    if (!small) return ctx.skip();
    const store = await PosixObjectStore.open({ directory: small!, createDirectory: false });
    const old = Buffer.alloc(300 * 1024, 3);
    await store.put('index/latest', old);
    await expect(store.put('index/latest', Buffer.alloc(900 * 1024, 4))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect((await store.get('index/latest')).equals(old)).toBe(true);
    expect(await listKeys(store)).toEqual(['index/latest']);
    expect(await temps(small!)).toEqual([]);
  });

  it('put(ifAbsent) too large for the disk fails with UNAVAILABLE, not ALREADY_EXISTS, and a retry that fits succeeds', async (ctx) => {
    if (!small) return ctx.skip();
    const store = await PosixObjectStore.open({ directory: small!, createDirectory: false });
    await expect(store.put('once', Buffer.alloc(2 * 1024 * 1024, 5), { ifAbsent: true })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(await temps(small!)).toEqual([]);
    await store.put('once', Buffer.alloc(1000, 6), { ifAbsent: true });
    expect((await store.get('once')).equals(Buffer.alloc(1000, 6))).toBe(true);
  });

  it('put when the filesystem has no free inodes fails with UNAVAILABLE and earlier objects stay readable', async (ctx) => {
    if (!fewInodes) return ctx.skip();
    const store = await PosixObjectStore.open({ directory: fewInodes!, createDirectory: false });
    const stored: string[] = [];
    let failure: unknown;
    for (let i = 0; i < 40 && !failure; i++) {
      const key = `d${i % 3}/${i.toString(16).padStart(2, '0')}${'ab'.repeat(10)}`;
      try {
        await store.put(key, Buffer.from(key));
        stored.push(key);
      } catch (err) {
        failure = err;
      }
    }
    expect(failure).toMatchObject({ code: 'UNAVAILABLE' });
    expect(stored.length).toBeGreaterThan(0);
    for (const key of stored) expect((await store.get(key)).toString()).toBe(key);
    expect(await listKeys(store)).toEqual([...stored].sort());
    expect(await temps(fewInodes!)).toEqual([]);
  });
});
