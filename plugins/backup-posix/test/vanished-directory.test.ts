import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
import { FsyncProbe } from './fsync-probe.js';
import { allFiles, tempStore } from './helpers.js';

// A directory of the store that disappears (removed, or the store's file system unmounted) is a
// retryable UNAVAILABLE for writes, never NOT_FOUND; a retry once it is back succeeds.
describe('writes into a vanished directory', () => {
  let store: PosixObjectStore;
  let probe: FsyncProbe | undefined;
  afterEach(async () => {
    probe?.restore();
    probe = undefined;
    await rm(store.directory, { recursive: true, force: true });
  });

  it('with the store directory gone, put and openWrite of any key fail with UNAVAILABLE and recreate nothing', async () => {
    const made = await tempStore('root-gone');
    store = await PosixObjectStore.open({ directory: made.directory, createDirectory: false });
    await store.put('locks/l0', Buffer.from('x'));
    await rm(store.directory, { recursive: true });
    for (const key of ['config', 'locks/l1', `data/${'ab'.repeat(16)}`]) {
      await expect(store.put(key, Buffer.from('x')), key).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    }
    await expect(store.openWrite('config')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(store.openWrite('locks/l2')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(stat(store.directory)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a key directory removed in the middle of a put fails it with UNAVAILABLE, leaves nothing, and the retry succeeds', async () => {
    store = await tempStore('dir-gone');
    probe = await FsyncProbe.install();
    const held = probe.hold(store.directory); // the put made index/ and fsyncs its parent
    const put = store.put('index/x', Buffer.from('x'));
    await held.reached;
    await rm(join(store.directory, 'index'), { recursive: true });
    held.release();
    await expect(put).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(await allFiles(store.directory)).toEqual([]);
    await store.put('index/x', Buffer.from('x'));
    expect((await store.get('index/x')).toString()).toBe('x');
  });

  it('a directory removed between two puts costs at most one UNAVAILABLE: the retry recreates it', async () => {
    store = await tempStore('dir-removed');
    await store.put('index/a', Buffer.from('a'));
    await store.put(`packs/${'9e'.repeat(32)}`, Buffer.from('p'));
    await rm(join(store.directory, 'index'), { recursive: true });
    await rm(join(store.directory, 'packs'), { recursive: true });
    for (const key of ['index/b', `packs/${'9e'.repeat(31)}00`]) {
      await store.put(key, Buffer.from('b')).catch((err: { code?: string }) => expect(err.code).toBe('UNAVAILABLE'));
      await store.put(key, Buffer.from('b'));
      expect((await store.get(key)).toString()).toBe('b');
    }
    const w = await store.openWrite('index/c').catch(() => store.openWrite('index/c'));
    await w.append(Buffer.from('c'));
    await w.commit();
    expect((await store.get('index/c')).toString()).toBe('c');
  });
});
