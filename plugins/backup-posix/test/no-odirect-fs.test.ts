import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { alignedBuffer } from '@cairn/core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createTempFile } from '../src/durable-fs.js';
import { PosixObjectStore } from '../src/index.js';
import { allFiles, listKeys } from './helpers.js';

// newTempName as it is, unless a test forces the next name (to stage a name collision).
const forced = vi.hoisted(() => ({ name: undefined as string | undefined }));
vi.mock('../src/key-layout.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/key-layout.js')>();
  return { ...real, newTempName: () => forced.name ?? real.newTempName() };
});

const temps = async (dir: string): Promise<string[]> => (await allFiles(dir)).filter((f) => f.includes('~'));

// A file system without O_DIRECT: ramfs, where open(O_CREAT|O_EXCL|O_DIRECT) creates the file
// and then fails with EINVAL (as do some FUSE mounts and tmpfs before Linux 6.6). Mounted when we
// may (root), in the group's beforeAll, not at the module's top level: a run that filters the
// group out (-t) runs neither its beforeAll nor its afterAll, so a top-level mount was left mounted.
let mountError = '';
function mountRamfs(): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-posix-ramfs-'));
  try {
    execFileSync('mount', ['-t', 'ramfs', '-o', 'mode=0700', 'ramfs', dir], { stdio: 'pipe' });
    return dir;
  } catch (err) {
    mountError = String((err as Error).message).split('\n')[0]!;
    rmdirSync(dir);
    return undefined;
  }
}

describe('a file system that refuses O_DIRECT (ramfs)', () => {
  let ramfs: string | undefined;
  beforeAll(() => {
    ramfs = mountRamfs();
    if (!ramfs) console.warn(`no-O_DIRECT file system tests skipped: cannot mount a ramfs (${mountError})`);
  });
  beforeEach((ctx) => {
    if (!ramfs) ctx.skip();
  });
  afterAll(() => {
    if (!ramfs) return;
    execFileSync('umount', [ramfs]);
    rmdirSync(ramfs);
  });
  afterEach(() => {
    if (ramfs) execFileSync('find', [ramfs, '-mindepth', '1', '-delete']);
  });

  it('put of an aligned 2 MiB buffer (the O_DIRECT path) falls back to buffered writes: stored whole, no temporary file left', async () => {
    const store = await PosixObjectStore.open({ directory: ramfs!, createDirectory: false });
    const data = alignedBuffer(2 * 1024 * 1024 + 100);
    data.fill(7);
    await store.put('packs/big', data);
    expect((await store.get('packs/big')).equals(data)).toBe(true);
    expect(await temps(ramfs!)).toEqual([]);
  });

  it('put(ifAbsent) of an aligned buffer stores the object (not ALREADY_EXISTS for an absent key), and a second one is ALREADY_EXISTS', async () => {
    const store = await PosixObjectStore.open({ directory: ramfs!, createDirectory: false });
    const data = alignedBuffer(2 * 1024 * 1024);
    data.fill(3);
    await store.put('packs/once', data, { ifAbsent: true });
    expect((await store.head('packs/once')).size).toBe(data.length);
    await expect(store.put('packs/once', data, { ifAbsent: true })).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    expect(await temps(ramfs!)).toEqual([]);
  });

  it('openWrite with aligned parts and a tail commits the whole object', async () => {
    const store = await PosixObjectStore.open({ directory: ramfs!, createDirectory: false });
    const key = `packs/${'c6'.repeat(32)}`;
    const w = await store.openWrite(key, { ifAbsent: true });
    const part = alignedBuffer(1024 * 1024);
    part.fill(9);
    await w.append(part);
    await w.append(Buffer.from('tail'));
    await w.commit();
    const got = await store.get(key);
    expect(got.length).toBe(1024 * 1024 + 4);
    expect(got.subarray(0, 1024 * 1024).every((b) => b === 9)).toBe(true);
    expect(got.subarray(1024 * 1024).toString()).toBe('tail');
    expect(await listKeys(store)).toEqual([key]);
    expect(await temps(ramfs!)).toEqual([]);
  });

  it('createTempFile(direct) there returns a buffered descriptor on one new file', async () => {
    const { path, fh, direct } = await createTempFile(ramfs!, true);
    await fh.close();
    expect(direct).toBe(false);
    expect(await readdir(ramfs!)).toEqual([path.slice(ramfs!.length + 1)]);
  });
});

describe('createTempFile and a name it did not create', () => {
  let dir: string;
  afterEach(async () => {
    forced.name = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it.each([false, true])('fails with EEXIST and leaves the other file alone (direct: %s)', async (direct) => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-posix-tempname-'));
    forced.name = '~tmp-1-000000000000000000000000';
    await writeFile(join(dir, forced.name), 'theirs');
    await expect(createTempFile(dir, direct)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(join(dir, forced.name), 'utf8')).toBe('theirs');
  });
});
