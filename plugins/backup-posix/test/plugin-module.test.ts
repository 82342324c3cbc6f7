import { lstat, mkdir, mkdtemp, open, rm, rmdir, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, memoryModule } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PosixObjectStore, posixModule } from '../src/index.js';

describe('posixModule', () => {
  let base: string;
  let registry: DriverRegistry;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-posix-module-'));
    registry = DriverRegistry.compose(memoryModule, posixModule);
  });
  afterAll(async () => rm(base, { recursive: true, force: true }));

  it('registry.objectStore(posix, {directory}) builds a working PosixObjectStore with atomicIfAbsent', async () => {
    expect(registry.names().objectStores).toContain('posix');
    const store = await registry.objectStore('posix', { directory: join(base, 'ok') });
    expect(store).toBeInstanceOf(PosixObjectStore);
    expect(store.capabilities.atomicIfAbsent).toBe(true);
    await store.put('k', Buffer.from('v'));
    expect((await store.get('k')).toString()).toBe('v');
    await store.close?.();
    await store.close?.();
  });

  it('objectStore(posix) creates a missing directory by default', async () => {
    const dir = join(base, 'made', 'deeper');
    await registry.objectStore('posix', { directory: dir });
    expect((await stat(dir)).isDirectory()).toBe(true);
  });

  it('objectStore(posix, {createDirectory: false}) of a missing directory fails with UNAVAILABLE naming directory', async () => {
    await expect(registry.objectStore('posix', { directory: join(base, 'absent'), createDirectory: false })).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      details: { option: 'directory' },
    });
  });

  /**
   * Where mkdir says ENOENT although the parent is there, Node's recursive mkdir remakes the
   * parent, finds it and tries again, for ever: a directory that takes no new entries (/proc and
   * its per-process directories) or one removed while still reachable (through /proc/self/fd).
   */
  it('objectStore(posix) of a directory that cannot be made where mkdir says ENOENT fails at once with UNAVAILABLE', async () => {
    const removed = join(base, 'removed');
    await mkdir(removed);
    const held = await open(removed, 'r');
    await rmdir(removed);
    try {
      for (const directory of ['/proc/self/cairn-repo/deeper', '/proc/1/cairn-repo', `/proc/self/fd/${held.fd}/repo`]) {
        const opened = registry.objectStore('posix', { directory });
        opened.catch(() => undefined);
        const late = new Promise<'still running'>((r) => setTimeout(() => r('still running'), 10_000).unref());
        const outcome = await Promise.race([opened.then(() => 'created', (err: unknown) => err), late]);
        expect(outcome, directory).toMatchObject({ code: 'UNAVAILABLE' });
      }
    } finally {
      await held.close();
    }
  });

  it('objectStore(posix) with a bad option fails with INVALID_INPUT naming that option', async () => {
    const file = join(base, 'a-file');
    await writeFile(file, 'x');
    const cases: [Record<string, unknown>, string][] = [
      [{}, 'directory'],
      [{ directory: '' }, 'directory'],
      [{ directory: 42 }, 'directory'],
      [{ directory: 'relative/path' }, 'directory'],
      [{ directory: file }, 'directory'],
      [{ directory: base, createDirectory: 'yes' }, 'createDirectory'],
      [{ directory: base, direktory: base }, 'direktory'],
    ];
    for (const [options, option] of cases) {
      await expect(registry.objectStore('posix', options), JSON.stringify(options)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { option } });
    }
  });

  /** ENOTDIR and EEXIST from making the directory are the option's fault, not keys colliding (CONFLICT) or an object existing. */
  it('objectStore(posix) of a directory through a file, or (to be created) at a dangling link, fails with INVALID_INPUT naming directory and makes nothing', async () => {
    const file = join(base, 'in-the-way');
    await writeFile(file, 'x');
    const dangling = join(base, 'dangling');
    await symlink(join(base, 'nowhere'), dangling);
    const cases: [string, boolean][] = [
      [join(file, 'repo'), true],
      [join(file, 'repo'), false],
      [join(file, 'repo', 'deeper'), true],
      [join(file, 'repo', 'deeper'), false],
      [dangling, true], // with createDirectory: false a dangling link may be an unmounted mount's: UNAVAILABLE
    ];
    for (const [directory, createDirectory] of cases) {
      await expect(registry.objectStore('posix', { directory, createDirectory }), `${directory} ${createDirectory}`).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        driver: 'posix',
        details: { option: 'directory' },
      });
    }
    expect((await stat(file)).isFile()).toBe(true);
    expect((await lstat(dangling)).isSymbolicLink()).toBe(true);
    await expect(stat(join(base, 'nowhere'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('new PosixObjectStore({directory: relative}) fails with INVALID_INPUT', () => {
    expect(() => new PosixObjectStore({ directory: 'rel' })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
  });

  it('composing posixModule twice fails with CONFLICT', () => {
    expect(() => DriverRegistry.compose(posixModule, posixModule)).toThrow(expect.objectContaining({ code: 'CONFLICT' }));
  });
});
