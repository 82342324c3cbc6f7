import { rm, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { tempStore } from './helpers.js';

// Runs `afterUnlink` right after the store's unlink(2) returns: the window in which another
// process may remove the object's (now empty) directory before delete fsyncs it.
const hook = vi.hoisted(() => ({ afterUnlink: undefined as ((path: string) => Promise<void>) | undefined }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const unlink: typeof fs.unlink = async (path) => {
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
