import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
import { FsyncProbe } from './fsync-probe.js';
import { tempStore } from './helpers.js';

// What must be durable before a call resolves, checked by watching (and holding back) fsyncs.
describe('a put resolves only once everything it relies on is durable', () => {
  let probe: FsyncProbe;
  let store: PosixObjectStore;
  beforeEach(async () => {
    probe = await FsyncProbe.install();
  });
  afterEach(async () => {
    probe.restore();
    await rm(store.directory, { recursive: true, force: true });
  });

  it('a put into a shard directory that another writer just created waits for an fsync of its parent, even while that writer\'s is still running', async () => {
    store = await tempStore('dirs-race');
    await store.put('data/seed', Buffer.from('s'));
    const other = await PosixObjectStore.open({ directory: store.directory });
    const data = join(store.directory, 'data');
    const held = probe.hold(data); // the creator's fsync of data/, which makes its new ab/ durable
    const first = store.put(`data/ab${'1'.repeat(62)}`, Buffer.from('A')).then(() => probe.mark('A resolved'));
    await held.reached;
    const from = probe.log.length;
    await other.put(`data/ab${'2'.repeat(62)}`, Buffer.from('B'));
    expect(probe.since(from)).toContain(`synced ${data}`);
    expect(probe.log).not.toContain('A resolved');
    held.release();
    await first;
  });

  it('a put after one whose fsync of a new directory\'s parent failed fsyncs that parent again', async () => {
    store = await tempStore('dirs-retry');
    await store.put('data/seed', Buffer.from('s'));
    const data = join(store.directory, 'data');
    const key = `data/cd${'3'.repeat(62)}`;
    probe.failNext(data, 'EIO');
    await expect(store.put(key, Buffer.from('C'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    const from = probe.log.length;
    await store.put(key, Buffer.from('C'));
    expect(probe.since(from)).toContain(`synced ${data}`);
  });

  it('a fresh store instance fsyncs every parent on the way to an existing directory once, and later puts there fsync only the object and its directory', async () => {
    store = await tempStore('dirs-fast');
    const key = `data/ef${'4'.repeat(62)}`;
    await store.put(key, Buffer.from('x'));
    const again = await PosixObjectStore.open({ directory: store.directory });
    const shard = dirname(store.pathOf(key));
    let from = probe.log.length;
    await again.put(key, Buffer.from('y'));
    const dirsSynced = (from: number) => probe.since(from).filter((e) => e.startsWith('synced ') && !e.includes('~tmp-'));
    expect(dirsSynced(from).sort()).toEqual([`synced ${store.directory}`, `synced ${join(store.directory, 'data')}`, `synced ${shard}`].sort());
    from = probe.log.length;
    await again.put(key, Buffer.from('z'));
    expect(dirsSynced(from)).toEqual([`synced ${shard}`]);
  });

  it('a losing put(ifAbsent) reports ALREADY_EXISTS only after the winner\'s link is durable, even while the winner\'s own fsync is still running', async () => {
    store = await tempStore('ifabsent');
    await store.put('chunklists/seed', Buffer.from('s'));
    const other = await PosixObjectStore.open({ directory: store.directory });
    await other.put('chunklists/seed2', Buffer.from('s'));
    const dir = join(store.directory, 'chunklists');
    const held = probe.hold(dir); // the winner's fsync after its link
    const winner = store.put('chunklists/page1', Buffer.from('page'), { ifAbsent: true }).then(() => probe.mark('winner resolved'));
    await held.reached;
    const from = probe.log.length;
    await expect(other.put('chunklists/page1', Buffer.from('page'), { ifAbsent: true })).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    expect(probe.since(from)).toContain(`synced ${dir}`);
    expect(probe.log).not.toContain('winner resolved');
    held.release();
    await winner;
  });

  it('open creating the store directory fsyncs the parent of every directory it created', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'cairn-posix-root-'));
    const from = probe.log.length;
    store = await PosixObjectStore.open({ directory: join(parent, 'a', 'repo') });
    expect(probe.since(from)).toEqual(expect.arrayContaining([`synced ${parent}`, `synced ${join(parent, 'a')}`]));
    store = { directory: parent } as PosixObjectStore; // afterEach removes it all
  });

  it('open of a store directory that another open just created waits for an fsync of its parent, even while that open\'s is still running', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'cairn-posix-root-'));
    const directory = join(parent, 'a', 'repo');
    const held = probe.hold(join(parent, 'a')); // the first open's fsync that makes its new repo/ durable
    const first = PosixObjectStore.open({ directory }).then(() => probe.mark('first resolved'));
    await held.reached;
    const from = probe.log.length;
    store = await PosixObjectStore.open({ directory });
    expect(probe.since(from)).toContain(`synced ${join(parent, 'a')}`);
    expect(probe.log).not.toContain('first resolved');
    held.release();
    await first;
    // Once per process: a later open of the same directory fsyncs nothing.
    const later = probe.log.length;
    await PosixObjectStore.open({ directory });
    expect(probe.since(later)).toEqual([]);
    store = { directory: parent } as PosixObjectStore; // afterEach removes it all
  });
});
