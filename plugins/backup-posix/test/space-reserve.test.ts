import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { link, lstat, readFile, rm, statfs, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_RESERVE_BYTES, MAKING_NAME, PosixObjectStore, RESERVE_NAME } from '../src/index.js';
import { MAKING_STALE_MS } from '../src/reserve-marker.js';
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
    // They raced for real: reserves were made and given up. Not necessarily by each: a creation
    // that finds the other's marker held writes nothing and does not wait (reserve-marker.ts), so
    // a child may run all its rounds while the other writes one reserve, making none.
    expect(results.reduce((n, r) => n + Number(r.made), 0)).toBeGreaterThan(0);
    expect(results.reduce((n, r) => n + Number(r.released), 0)).toBeGreaterThan(0);
    expect(seen).toBeGreaterThan(0);
    expect(await allFiles(s.directory)).toEqual([RESERVE_NAME]);
    expect((await lstat(reserveOf(s))).size).toBe(bytes);
  }, 60_000);
});

// Creators racing on a nearly full disk: a 16 MiB tmpfs, mounted when we may (root). Mounted in
// the group's beforeAll, not at the module's top level: a run that filters this group out (-t)
// runs neither its beforeAll nor its afterAll, so a top-level mount was left mounted.
const MiB = 1024 * KiB;
const freeOf = async (dir: string): Promise<number> => {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
};
/** The test seam of a store's reserve (space-reserve.ts): called before a creation writes. */
const seam = (s: PosixObjectStore): { beforeWrite?: () => Promise<void> | void } => (s as unknown as { reserve: { beforeWrite?: () => Promise<void> | void } }).reserve;

describe('creators of one reserve at once (16 MiB tmpfs)', () => {
  let tmpfs: string | undefined;
  beforeAll(() => {
    const dir = mkdtempSync(join(tmpdir(), 'cairn-reserve-race-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', dir], { stdio: 'pipe' });
      tmpfs = dir;
    } catch (err) {
      rmdirSync(dir);
      console.warn(`reserve race tests skipped: cannot mount a tmpfs (${String((err as Error).message).split('\n')[0]})`);
    }
  });
  afterAll(() => {
    if (!tmpfs) return;
    execFileSync('umount', [tmpfs]);
    rmdirSync(tmpfs);
  });
  afterEach(() => {
    if (tmpfs) execFileSync('find', [tmpfs, '-mindepth', '1', '-delete']);
  });

  it('four store instances opening a nearly full disk at once write one temporary reserve, not four: all see the reserve, the disk keeps the rest, no temporary or marker is left', async (ctx) => {
    if (!tmpfs) return ctx.skip();
    const bytes = 4 * MiB;
    // 10 MiB free: room for the reserve twice over, not for four temporary reserves.
    execFileSync('dd', ['if=/dev/zero', `of=${join(tmpfs!, 'filler')}`, 'bs=1M', `count=${Math.floor((await freeOf(tmpfs!)) / MiB) - 10}`], { stdio: 'pipe' });
    const free = await freeOf(tmpfs!);
    expect(free).toBeGreaterThanOrEqual(10 * MiB);
    expect(free).toBeLessThan(11 * MiB);
    const dir = join(tmpfs!, 'repo');
    const stores = await Promise.all([0, 1, 2, 3].map(() => PosixObjectStore.open({ directory: dir, reserveBytes: bytes })));
    // Every creation that gets to write waits until all four got there (or, when fewer ever do,
    // a while): without a bound on creators, all four pass the free-space check before any writes.
    let writers = 0;
    for (const s of stores) {
      seam(s).beforeWrite = async () => {
        writers++;
        for (let i = 0; i < 40 && writers < stores.length; i++) await new Promise((r) => setTimeout(r, 25));
      };
    }
    const made = await Promise.all(stores.map((s) => s.ensureReserve()));
    expect(writers).toBe(1);
    // The one that wrote it sees it; the others, which found the marker held, did not wait for it.
    expect(made.filter(Boolean).length).toBeGreaterThanOrEqual(1);
    for (const s of stores) expect(await s.ensureReserve()).toBe(true);
    expect((await allFiles(dir)).sort()).toEqual([RESERVE_NAME]);
    expect((await lstat(join(dir, RESERVE_NAME))).size).toBe(bytes);
    expect(await freeOf(tmpfs!)).toBeGreaterThanOrEqual(free - bytes - 64 * KiB); // the reserve and its directory, nothing more
    for (const s of stores) expect(await s.shortOfSpace()).toBe(false);
  }, 60_000);

  it('a fresh marker on a disk with less than the reserve free (its creator died just now, the disk filled) does not hide the shortage: shortOfSpace is true, and false again once there is room', async (ctx) => {
    if (!tmpfs) return ctx.skip();
    const bytes = 4 * MiB;
    const dir = join(tmpfs, 'repo');
    const s = await PosixObjectStore.open({ directory: dir, reserveBytes: bytes });
    const filler = join(tmpfs, 'filler');
    // 1 MiB free: a live creator, which found twice the reserve free, would leave at least the reserve's size.
    execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1M', `count=${Math.floor((await freeOf(tmpfs)) / MiB) - 1}`], { stdio: 'pipe' });
    expect(await freeOf(tmpfs)).toBeLessThan(bytes);
    await writeFile(join(dir, MAKING_NAME), ''); // left by a creator killed a moment ago: fresh for MAKING_STALE_MS
    expect(await s.shortOfSpace()).toBe(true);
    await rm(filler);
    // Room again, the marker still fresh: the reserve may be on its way, as the marker says.
    expect(await s.shortOfSpace()).toBe(false);
    expect(await allFiles(dir)).toEqual([MAKING_NAME]); // nothing written while the marker is held
  }, 60_000);
});

describe('the reserve marker (@reserve.making)', () => {
  it('a creation that finds a live marker writes nothing and does not wait: false while the holder works, true once it published; shortOfSpace meanwhile is false', async () => {
    const s = await store(256 * KiB);
    let wrote = 0;
    seam(s).beforeWrite = () => {
      wrote++;
    };
    await writeFile(join(s.directory, MAKING_NAME), ''); // another creator at work
    expect(await s.ensureReserve()).toBe(false); // not there yet, and not waited for
    expect(await s.shortOfSpace()).toBe(false); // it is being made
    // The holder publishes its reserve and gives the marker back.
    const made = join(s.directory, '~tmp-holder');
    await writeFile(made, randomBytes(256 * KiB));
    await link(made, reserveOf(s));
    await unlink(made);
    await unlink(join(s.directory, MAKING_NAME));
    expect(await s.ensureReserve()).toBe(true);
    expect(await s.shortOfSpace()).toBe(false);
    expect(wrote).toBe(0);
    expect(await allFiles(s.directory)).toEqual([RESERVE_NAME]);
  });

  it('a marker left by a creator that died (older than MAKING_STALE_MS) is taken over: the reserve is made and no marker or temporary file is left', async () => {
    const s = await store(256 * KiB);
    const marker = join(s.directory, MAKING_NAME);
    await writeFile(marker, '');
    const old = new Date(Date.now() - MAKING_STALE_MS - 60_000);
    await utimes(marker, old, old);
    expect(await s.ensureReserve()).toBe(true);
    expect((await lstat(reserveOf(s))).size).toBe(256 * KiB);
    expect(await allFiles(s.directory)).toEqual([RESERVE_NAME]);
  });
});
