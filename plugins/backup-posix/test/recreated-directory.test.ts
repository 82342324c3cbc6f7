import { mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { FsyncProbe } from './fsync-probe.js';
import { tempStore } from './helpers.js';

const key = (c: string) => `data/ab${c.repeat(62)}`;

// A directory this store made durable, then removed and made again by something else that does
// not fsync its parent (a cleanup of empty shards, a copy tool): a put into it must fsync the
// parent again before it resolves, or its object's directory entry may not survive a crash.
describe('a put into a directory removed and recreated by someone else', () => {
  let probe: FsyncProbe;
  let store: PosixObjectStore;
  beforeEach(async () => {
    probe = await FsyncProbe.install();
  });
  afterEach(async () => {
    probe.restore();
    await rm(store.directory, { recursive: true, force: true });
  });

  const dirsSynced = (from: number) => probe.since(from).filter((e) => e.startsWith('synced ') && !e.includes('~tmp-'));

  it('a shard directory recreated (same path, maybe the same inode number) gets its parent fsynced again by the next put, and later puts go back to fsyncing only their directory', async () => {
    store = await tempStore('recreated-shard');
    await store.put(key('1'), Buffer.from('1'));
    const shard = dirname(store.pathOf(key('1')));
    const data = join(store.directory, 'data');
    await rm(shard, { recursive: true });
    await mkdir(shard); // no fsync of data/
    let from = probe.log.length;
    await store.put(key('2'), Buffer.from('2'));
    expect(dirsSynced(from)).toContain(`synced ${data}`);
    expect((await store.get(key('2'))).toString()).toBe('2');
    from = probe.log.length;
    await store.put(key('3'), Buffer.from('3'));
    expect(dirsSynced(from)).toEqual([`synced ${shard}`]);
  });

  it('a whole tree recreated (data/ and its shard) gets every parent on the way fsynced again', async () => {
    store = await tempStore('recreated-tree');
    await store.put(key('1'), Buffer.from('1'));
    const shard = dirname(store.pathOf(key('1')));
    const data = join(store.directory, 'data');
    const before = await stat(data, { bigint: true });
    await rm(data, { recursive: true });
    await mkdir(shard, { recursive: true });
    expect((await stat(data, { bigint: true })).birthtimeNs).not.toBe(before.birthtimeNs);
    const from = probe.log.length;
    await store.put(key('2'), Buffer.from('2'));
    expect(dirsSynced(from)).toEqual(expect.arrayContaining([`synced ${store.directory}`, `synced ${data}`, `synced ${shard}`]));
  });
});
