import { mkdir, mkdtemp, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
import { tempStore } from './helpers.js';

// Runs `beforeUnlink` right before the store's unlink(2) (after delete checked its root), and
// `afterUnlink` right after it returns: the window in which another process may remove the
// object's (now empty) directory before delete fsyncs it. The real unlink(2) runs in between.
const hook = vi.hoisted(() => ({
  beforeUnlink: undefined as ((path: string) => Promise<void>) | undefined,
  afterUnlink: undefined as ((path: string) => Promise<void>) | undefined,
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const unlink: typeof fs.unlink = async (path) => {
    const before = hook.beforeUnlink;
    hook.beforeUnlink = undefined;
    await before?.(String(path));
    await fs.unlink(path);
    const after = hook.afterUnlink;
    hook.afterUnlink = undefined;
    await after?.(String(path));
  };
  return { ...fs, default: { ...fs, unlink }, unlink };
});

const KEY = `data/${'5a'.repeat(32)}`;

describe('delete while the object\'s directory vanishes', () => {
  let store: PosixObjectStore;
  afterEach(async () => {
    hook.beforeUnlink = undefined;
    hook.afterUnlink = undefined;
    await rm(store.directory, { recursive: true, force: true });
  });

  it('delete succeeds, as for an absent key, when another process removes the emptied shard directory before delete fsyncs it', async () => {
    store = await tempStore('delete-race');
    await store.put(KEY, Buffer.from('x'));
    hook.afterUnlink = (path) => rmdir(dirname(path));
    await store.delete(KEY);
    await expect(store.get(KEY)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await store.delete(KEY);
  });

  it('delete succeeds when a whole directory tree of the key is removed (rm -r) right after its unlink', async () => {
    store = await tempStore('delete-race-tree');
    await store.put('index/a/b', Buffer.from('x'));
    hook.afterUnlink = () => rm(join(store.directory, 'index'), { recursive: true });
    await store.delete('index/a/b');
    await expect(store.head('index/a/b')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('delete while the pinned store directory is replaced between its root check and its unlink', () => {
  let base: string;
  afterEach(async () => {
    hook.beforeUnlink = undefined;
    await rm(base, { recursive: true, force: true });
  });

  // A mount gone (or the directory replaced) after delete's first root check leaves an empty
  // directory at the path, where the unlink finds nothing: the key looks absent. Only the check
  // after the unlink tells that apart from an absent key; without it the delete would succeed
  // while the object is still in the store's real directory.
  it('is UNAVAILABLE, not a successful delete of an absent key, and the object stays in the directory pinned', async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-posix-delete-root-'));
    const directory = join(base, 'store');
    const moved = join(base, 'moved');
    await mkdir(directory);
    const store = await PosixObjectStore.open({ directory, createDirectory: false, reserveBytes: 0 });
    await store.put(KEY, Buffer.from('kept'));
    hook.beforeUnlink = async () => {
      await rename(directory, moved);
      await mkdir(directory); // what a mount point shows once unmounted: an empty directory
    };
    await expect(store.delete(KEY)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { directory } });
    expect(hook.beforeUnlink).toBeUndefined(); // the replacement did happen inside the window
    expect(await readFile(join(moved, store.pathOf(KEY).slice(directory.length + 1)), 'utf8')).toBe('kept');
  });
});
