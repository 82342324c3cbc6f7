import { readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm, rmdir, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeDirectories } from '../src/util/make-directories.js';

/** `promise`'s outcome, or 'still running' after `ms`: a call that spins fails its test instead of stalling the suite. */
function within<T>(ms: number, promise: Promise<T>): Promise<T | unknown> {
  promise.catch(() => undefined);
  const late = new Promise<'still running'>((r) => setTimeout(() => r('still running'), ms).unref());
  return Promise.race([promise.then((v) => v, (err: unknown) => err), late]);
}

/** Runs `body` while recording the path of every fsync this process makes through FileHandle.sync (Linux: /proc/self/fd). */
async function fsyncedDuring(body: () => Promise<void>): Promise<string[]> {
  const probe = await open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(probe) as { sync: (this: FileHandle) => Promise<void> };
  await probe.close();
  const original = proto.sync;
  const paths: string[] = [];
  proto.sync = function (this: FileHandle) {
    paths.push(readlinkSync(`/proc/self/fd/${this.fd}`));
    return original.call(this);
  };
  try {
    await body();
  } finally {
    proto.sync = original;
  }
  return paths;
}

describe('makeDirectories', () => {
  let base: string;
  beforeAll(async () => (base = await mkdtemp(join(tmpdir(), 'cairn-make-directories-'))));
  afterAll(() => rm(base, { recursive: true, force: true }));

  it('makeDirectories(a/b/c/d) makes every missing level; again, it changes nothing', async () => {
    const dir = join(base, 'plain', 'b', 'c', 'd');
    await makeDirectories(dir);
    expect((await stat(dir)).isDirectory()).toBe(true);
    const before = await stat(dir);
    await makeDirectories(dir);
    expect((await stat(dir)).ino).toBe(before.ino);
  });

  it('makeDirectories of one tree from many calls at once: every call resolves and the whole tree is there', async () => {
    for (const durable of [false, true]) {
      const root = join(base, `concurrent-${durable}`);
      const dirs = Array.from({ length: 24 }, (_, i) => join(root, 'a', 'b', i % 3 === 0 ? 'c' : `c${i % 4}`, 'd', 'e'));
      const outcomes = await Promise.allSettled(dirs.map((d) => makeDirectories(d, { durable })));
      expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
      for (const d of dirs) expect((await stat(d)).isDirectory()).toBe(true);
    }
  });

  it('makeDirectories(relative path) makes it under the working directory', async () => {
    const dir = join(base, 'relative', 'x');
    await makeDirectories(relative(process.cwd(), dir));
    expect((await stat(dir)).isDirectory()).toBe(true);
  });

  /**
   * mkdir says ENOENT although the parent is there: /proc and its per-process directories take no
   * new entries, and a removed directory is still reached through /proc/self/fd. Node 20's
   * recursive mkdir retries that for ever.
   */
  it('makeDirectories where mkdir says ENOENT although the parent is there fails at once with UNAVAILABLE naming the level', async () => {
    const removed = join(base, 'removed');
    await mkdir(removed);
    const held = await open(removed, 'r');
    await rmdir(removed);
    try {
      const cases: [string, string][] = [
        ['/proc/self/cairn-volumes', '/proc/self/cairn-volumes'],
        ['/proc/self/cairn-volumes/deeper/still', '/proc/self/cairn-volumes'],
        ['/proc/cairn-volumes', '/proc/cairn-volumes'],
        [`/proc/self/fd/${held.fd}/volumes/x`, `/proc/self/fd/${held.fd}/volumes`],
      ];
      for (const [dir, level] of cases) {
        for (const durable of [false, true]) {
          const outcome = await within(10_000, makeDirectories(dir, { durable, driver: 'test' }));
          expect(outcome, dir).toMatchObject({ name: 'CairnError', code: 'UNAVAILABLE', driver: 'test', details: { file: level }, cause: { code: 'ENOENT' } });
        }
      }
    } finally {
      await held.close();
    }
  });

  it('makeDirectories through a file is ENOTDIR, of a file EEXIST (system errors, as they are), and makes nothing', async () => {
    const file = join(base, 'a-file');
    await writeFile(file, 'x');
    await expect(makeDirectories(join(file, 'below', 'deeper'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(makeDirectories(file)).rejects.toMatchObject({ code: 'EEXIST' });
    expect((await stat(file)).isFile()).toBe(true);
  });

  it('makeDirectories(existing dir, {durable}) fsyncs its parent once per process (its maker may still be fsyncing it); without durable, nothing', async () => {
    const dir = join(base, 'made-elsewhere', 'repo');
    await mkdir(dir, { recursive: true }); // as a creator that has not fsynced yet
    expect(await fsyncedDuring(() => makeDirectories(dir))).toEqual([]);
    expect(await fsyncedDuring(() => makeDirectories(dir, { durable: true }))).toEqual([dirname(dir)]);
    expect(await fsyncedDuring(() => makeDirectories(dir, { durable: true }))).toEqual([]);
    // A level below it, made by the call, has its parent fsynced; the existing one is known durable.
    expect(await fsyncedDuring(() => makeDirectories(join(dir, 'below'), { durable: true }))).toEqual([dir]);
  });
});
