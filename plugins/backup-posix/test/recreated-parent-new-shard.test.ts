import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { FsyncProbe } from './fsync-probe.js';
import { tempStore } from './helpers.js';

const key = (shard: string, c: string) => `data/${shard}${c.repeat(62)}`;

// data/ made durable by this store, then removed and made again by someone else that did not
// fsync the store's directory; a put into a shard this store never made (so not remembered) must
// still get data/'s entry fsynced again before it resolves.
describe('a put into a new shard under a recreated parent directory', () => {
  let probe: FsyncProbe;
  let store: PosixObjectStore;
  beforeEach(async () => {
    probe = await FsyncProbe.install();
  });
  afterEach(async () => {
    probe.restore();
    await rm(store.directory, { recursive: true, force: true });
  });

  it('fsyncs the store directory again when data/ was recreated', async () => {
    store = await tempStore('recreated-parent');
    await store.put(key('ab', '1'), Buffer.from('1'));
    const data = join(store.directory, 'data');
    const before = await stat(data, { bigint: true });
    await rm(data, { recursive: true });
    await mkdir(data); // no fsync of the store's directory
    expect((await stat(data, { bigint: true })).birthtimeNs).not.toBe(before.birthtimeNs);
    const from = probe.log.length;
    await store.put(key('cd', '2'), Buffer.from('2'));
    const synced = probe.since(from).filter((e) => e.startsWith('synced ') && !e.includes('~tmp-'));
    expect(synced).toContain(`synced ${store.directory}`);
  });
});
