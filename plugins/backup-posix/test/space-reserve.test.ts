import { lstat, readFile, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_RESERVE_BYTES, PosixObjectStore, RESERVE_NAME } from '../src/index.js';
import { allFiles, assertDistFresh, listKeys, PACKAGE_DIR, spawnChild, tempStore } from './helpers.js';

/**
 * The posix store's space reserve where the disk has room (repository-full-disk.test.ts shows what
 * it is for, on a full tmpfs): what it is on disk, that it is never an object, when it is made,
 * and that processes racing to give it up and make it again leave one whole reserve at most.
 */
const KiB = 1024;
const dirs: string[] = [];
async function store(reserveBytes?: number): Promise<PosixObjectStore> {
  const s = await tempStore('reserve');
  dirs.push(s.directory);
  return reserveBytes === undefined ? s : PosixObjectStore.open({ directory: s.directory, reserveBytes });
}
const reserveOf = (s: PosixObjectStore): string => join(s.directory, RESERVE_NAME);
const exists = (path: string): Promise<boolean> => lstat(path).then(() => true, () => false);

afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('the posix store space reserve', () => {
  it('ensureReserve makes a file of reserveBytes random bytes, allocated on disk, that no list, get, head or sweep sees; idempotent', async () => {
    const s = await store(2048 * KiB);
    await s.put('a/b', Buffer.from('x'));
    expect(s.capabilities.spaceReserve).toBe(true);
    expect(await s.ensureReserve()).toBe(true);
    const st = await lstat(reserveOf(s));
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(2048 * KiB);
    expect(st.blocks * 512).toBeGreaterThanOrEqual(st.size); // really allocated, no hole
    const bytes = await readFile(reserveOf(s));
    expect(bytes.every((b) => b === 0)).toBe(false);
    // Random, not one piece repeated (a deduplicating file system would store that once).
    expect(bytes.subarray(0, 1024 * KiB).equals(bytes.subarray(1024 * KiB))).toBe(false);
    expect(await listKeys(s)).toEqual(['a/b']);
    await expect(s.head(RESERVE_NAME)).rejects.toMatchObject({ code: 'INVALID_INPUT' }); // no key names it
    expect(await s.sweepTemp(0)).toBe(0);
    expect(await s.ensureReserve()).toBe(true);
    expect((await lstat(reserveOf(s))).ino).toBe(st.ino); // the same file, not made again
    expect((await allFiles(s.directory)).sort()).toEqual([RESERVE_NAME, 'a/b']); // no temporary left
  });

  it('reserveBytes 0 disables it: ensureReserve makes nothing and resolves false', async () => {
    const s = await store(0);
    expect(await s.ensureReserve()).toBe(false);
    await s.put('k', Buffer.from('v'));
    await s.delete('k');
    expect(await allFiles(s.directory)).toEqual([]);
  });

  it('a store never asked for a reserve makes none on its own (a delete does not); once asked, a delete makes it again when it is missing', async () => {
    const s = await store(256 * KiB);
    await s.put('k', Buffer.from('v'));
    await s.delete('k');
    expect(await exists(reserveOf(s))).toBe(false);
    expect(await s.ensureReserve()).toBe(true);
    await unlink(reserveOf(s)); // given up (by this or another process)
    await s.put('k', Buffer.from('v'));
    expect(await exists(reserveOf(s))).toBe(false); // a put makes none
    await s.delete('k');
    expect((await lstat(reserveOf(s))).size).toBe(256 * KiB);
  });

  it('the default is DEFAULT_RESERVE_BYTES (64 MiB); a bad reserveBytes is INVALID_INPUT naming the option', async () => {
    expect(DEFAULT_RESERVE_BYTES).toBe(64 * 1024 * KiB);
    const s = await store();
    for (const bad of [-1, 1.5, '1024', Number.NaN, 2 ** 60]) {
      await expect(PosixObjectStore.open({ directory: s.directory, reserveBytes: bad as number })).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { option: 'reserveBytes' } });
    }
  });

  it('two processes racing to give the reserve up and make it again leave at most one whole reserve and no temporary file', async () => {
    assertDistFresh();
    const s = await store();
    const bytes = 512 * KiB;
    const children = [0, 1].map(() => spawnChild({ directory: s.directory, bytes, rounds: 30 }, join(PACKAGE_DIR, 'test', 'fixtures', 'reserve-child.mjs')));
    await Promise.all(children.map((c) => c.waitFor('ready')));
    for (const c of children) c.proc.stdin!.write('go\n');
    // Meanwhile: whenever a reserve is there, it is whole (published only once written).
    let seen = 0;
    const done = Promise.all(children.map((c) => c.waitFor('done')));
    let finished = false;
    void done.then(() => (finished = true), () => (finished = true));
    while (!finished) {
      const st = await lstat(reserveOf(s)).catch(() => undefined);
      if (st) {
        seen++;
        expect(st.size).toBe(bytes);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    const results = await done;
    for (const c of children) expect(await c.exited).toEqual({ code: 0, signal: null });
    // Both raced for real: each had a reserve there (made, or found made) and gave one up.
    for (const r of results) {
      expect(r.made).toBeGreaterThan(0);
      expect(r.released).toBeGreaterThan(0);
    }
    expect(seen).toBeGreaterThan(0);
    expect(await allFiles(s.directory)).toEqual([RESERVE_NAME]);
    expect((await lstat(reserveOf(s))).size).toBe(bytes);
  }, 60_000);
});
