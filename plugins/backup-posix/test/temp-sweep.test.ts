import { link, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { newTempName } from '../src/key-layout.js';
import { allFiles, listKeys, tempStore } from './helpers.js';

// unlink(2) and rename(2) of the paths `refused` names fail with EPERM, as in a directory made
// append-only (chattr +a: files can be created and linked there, never removed or renamed away).
const fault = vi.hoisted(() => ({ refused: undefined as ((path: string) => boolean) | undefined }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const eperm = (syscall: string, path: unknown): Error => Object.assign(new Error(`EPERM: operation not permitted, ${syscall} '${String(path)}'`), { code: 'EPERM', syscall });
  const unlink: typeof real.unlink = async (path) => {
    if (fault.refused?.(String(path))) throw eperm('unlink', path);
    return real.unlink(path);
  };
  const rename: typeof real.rename = async (from, to) => {
    if (fault.refused?.(String(from)) || fault.refused?.(String(to))) throw eperm('rename', from);
    return real.rename(from, to);
  };
  return { ...real, unlink, rename, default: { ...real, unlink, rename } };
});

const KEY = `data/${'7f'.repeat(32)}`;
const temps = async (dir: string): Promise<string[]> => (await allFiles(dir)).filter((f) => f.includes('~tmp-'));

describe('sweepTemp', () => {
  let store: PosixObjectStore;
  afterEach(async () => {
    vi.useRealTimers();
    fault.refused = undefined;
    await rm(store.directory, { recursive: true, force: true });
  });

  it('sweepTemp(olderThanMs) removes temporary files older than the age in every directory and keeps younger ones and all objects', async () => {
    store = await tempStore('sweep');
    await store.put(KEY, Buffer.from('object'));
    await store.put('index/latest', Buffer.from('i'));
    const shard = dirname(store.pathOf(KEY));
    const old = [join(shard, newTempName()), join(store.directory, 'index', newTempName()), join(store.directory, newTempName())];
    const young = join(shard, newTempName());
    for (const p of [...old, young]) await writeFile(p, 'partial');
    const hourAgo = new Date(Date.now() - 3_600_000);
    for (const p of old) await utimes(p, hourAgo, hourAgo);

    expect(await store.sweepTemp(60_000)).toBe(3);
    const left = (await allFiles(store.directory)).filter((f) => f.includes('~'));
    expect(left).toEqual([young.slice(store.directory.length + 1)]);
    expect(await listKeys(store)).toEqual(['index/latest', KEY].sort());
    expect(await store.sweepTemp(0)).toBe(1);
    expect(await store.sweepTemp(0)).toBe(0);
    expect((await store.get(KEY)).toString()).toBe('object');
  });

  it('sweepTemp removes a leftover second link of a published object without touching the object', async () => {
    store = await tempStore('sweep-link');
    await store.put(KEY, Buffer.from('published'), { ifAbsent: true });
    // As if the writer died between link(temp, final) and unlink(temp).
    const leftover = join(dirname(store.pathOf(KEY)), newTempName());
    await link(store.pathOf(KEY), leftover);
    expect(await listKeys(store)).toEqual([KEY]);
    expect(await store.sweepTemp(0)).toBe(1);
    expect(await readdir(dirname(leftover))).toEqual([KEY.split('/')[1]]);
    expect((await store.get(KEY)).toString()).toBe('published');
  });

  it('sweepTemp(0) removes a temporary file written earlier in the current millisecond, and keeps one from the next', async () => {
    store = await tempStore('sweep-now');
    const now = Math.floor(Date.now()) - 5_000;
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(now); // Date.now() has whole milliseconds; file times have nanoseconds
    const [current, next] = [join(store.directory, newTempName()), join(store.directory, newTempName())];
    for (const [path, ms] of [[current, now + 0.3], [next, now + 1.5]] as const) {
      await writeFile(path, 'partial');
      await utimes(path, ms / 1000, ms / 1000);
    }
    expect(await store.sweepTemp(0)).toBe(1);
    expect(await allFiles(store.directory)).toEqual([next.slice(store.directory.length + 1)]);
  });

  it('sweepTemp removes every other old temporary file when the file system refuses one, then rejects UNAVAILABLE counting both', async () => {
    store = await tempStore('sweep-refused');
    await store.put(KEY, Buffer.from('object'));
    await store.put('index/latest', Buffer.from('i'));
    const old = [dirname(store.pathOf(KEY)), join(store.directory, 'index'), store.directory, dirname(store.pathOf(KEY))].map((d) => join(d, newTempName()));
    const hourAgo = new Date(Date.now() - 3_600_000);
    for (const p of old) {
      await writeFile(p, 'partial');
      await utimes(p, hourAgo, hourAgo);
    }
    let first: string | undefined;
    fault.refused = (path) => path === (first ??= path); // the first file the sweep tries, wherever the walk starts

    const err = await store.sweepTemp(60_000).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', driver: 'posix', details: { removed: 3, refused: 1 } });
    expect(await temps(store.directory)).toEqual([first!.slice(store.directory.length + 1)]);
    expect(await listKeys(store)).toEqual(['index/latest', KEY].sort());
    fault.refused = undefined;
    expect(await store.sweepTemp(60_000)).toBe(1);
  });

  it('in a directory that refuses removals (chattr +a), puts and deletes leave only temporary files, which sweepTemp removes once it may', async () => {
    store = await tempStore('append-only');
    await store.put('locks/seed', Buffer.from('old'));
    const locks = join(store.directory, 'locks');
    fault.refused = (path) => dirname(path) === locks;

    // link(2) publishes; the unlink of the temporary file, a second link of the object, is refused.
    await store.put('locks/a', Buffer.from('a'), { ifAbsent: true });
    expect(await temps(store.directory)).toHaveLength(1);
    // rename(2) is refused, and so is the unlink of the temporary file after it.
    await expect(store.put('locks/seed', Buffer.from('new'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(await temps(store.directory)).toHaveLength(2);
    // A delete is a plain unlink: refused, it leaves no file of its own.
    await expect(store.delete('locks/seed')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(await temps(store.directory)).toHaveLength(2);
    await expect(store.sweepTemp(0)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { removed: 0, refused: 2 } });

    fault.refused = undefined;
    expect(await store.sweepTemp(0)).toBe(2);
    expect((await allFiles(store.directory)).sort()).toEqual(['locks/a', 'locks/seed']);
    expect((await store.get('locks/a')).toString()).toBe('a');
    expect((await store.get('locks/seed')).toString()).toBe('old');
  });

  it('sweepTemp(-1) fails with INVALID_INPUT', async () => {
    store = await tempStore('sweep-bad');
    await expect(store.sweepTemp(-1)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });

  it('put leaves no temporary file behind after success, ifAbsent refusal or replace', async () => {
    store = await tempStore('no-temp');
    await store.put(KEY, Buffer.alloc(100_000, 1));
    await store.put(KEY, Buffer.alloc(50_000, 2));
    await expect(store.put(KEY, Buffer.alloc(10, 3), { ifAbsent: true })).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    await store.put('other', Buffer.alloc(10, 4), { ifAbsent: true });
    expect((await allFiles(store.directory)).sort()).toEqual(['other', `data/7f/${'7f'.repeat(32)}`].sort());
  });
});
