import { rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { alignedBuffer } from '@cairn/core';
import type { PosixObjectStore } from '../src/index.js';
import { allFiles, collect, tempStore } from './helpers.js';

const MiB = 1024 * 1024;

describe('put and get on one directory', () => {
  let store: PosixObjectStore;
  afterEach(async () => rm(store.directory, { recursive: true, force: true }));

  it('get during repeated replacing puts always returns one whole version, never a mix or a part', async () => {
    store = await tempStore('replace');
    const key = `data/${'0d'.repeat(32)}`;
    const size = 2 * MiB + 3;
    await store.put(key, Buffer.alloc(size, 1));
    let writing = true;
    const writer = (async () => {
      for (let v = 2; v <= 30; v++) await store.put(key, Buffer.alloc(size, v));
      writing = false;
    })();
    const versions = new Set<number>();
    let reads = 0;
    while (writing || reads === 0) {
      const [whole, tail] = await Promise.all([store.get(key), store.get(key, { offset: size - MiB, length: MiB })]);
      expect(whole.length).toBe(size);
      expect(whole.equals(Buffer.alloc(size, whole[0]!)), 'one version').toBe(true);
      expect(tail.equals(Buffer.alloc(MiB, tail[0]!)), 'one version in the range').toBe(true);
      versions.add(whole[0]!);
      reads++;
    }
    await writer;
    expect((await store.get(key))[0]).toBe(30);
    expect(versions.size).toBeGreaterThan(1);
    expect((await allFiles(store.directory)).filter((f) => f.includes('~'))).toEqual([]);
  });

  it('a large put from an aligned buffer (the O_DIRECT path) stores exactly its bytes, for whole-block and odd lengths', async () => {
    store = await tempStore('direct');
    for (const [i, size] of [2 * MiB, 3 * MiB + 4097, MiB + 1].entries()) {
      const data = alignedBuffer(size);
      for (let j = 0; j + 4 <= size; j += 4096) data.writeUInt32BE((j * 2654435761 + i) >>> 0, j);
      data[size - 1] = 0xab;
      const key = `packs/${String(i).repeat(64)}`;
      await store.put(key, data, { ifAbsent: true });
      expect((await store.head(key)).size).toBe(size);
      expect((await store.get(key)).equals(data)).toBe(true);
      // The same bytes from a plain Buffer (the buffered path) make an identical object.
      await store.put(`${key}-plain`, Buffer.from(data));
      expect((await store.get(`${key}-plain`)).equals(data)).toBe(true);
    }
    expect((await allFiles(store.directory)).filter((f) => f.includes('~'))).toEqual([]);
  });

  it('head and list report the same size and the file\'s modification time as ISO', async () => {
    store = await tempStore('head');
    await store.put('a/b', Buffer.alloc(4321));
    const when = new Date('2024-02-03T04:05:06.000Z');
    await utimes(store.pathOf('a/b'), when, when);
    const info = await store.head('a/b');
    expect(info).toEqual({ key: 'a/b', size: 4321, modifiedAt: when.toISOString() });
    expect(await collect(store.list('a/'))).toEqual([info]);
  });

  it('list stops cleanly when the caller breaks out early', async () => {
    store = await tempStore('break');
    for (let i = 0; i < 20; i++) await store.put(`k/${i}`, Buffer.from('x'));
    let n = 0;
    for await (const _ of store.list('k/')) if (++n === 3) break;
    expect(n).toBe(3);
    expect((await collect(store.list('k/'))).length).toBe(20);
  });

  it('malformed keys and prefixes fail with INVALID_INPUT before touching the disk', async () => {
    store = await tempStore('malformed');
    for (const key of ['../x', 'a/~tmp-1-2', 'a\\b', 'a/b/', '']) {
      await expect(store.put(key, Buffer.from('x')), key).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      await expect(store.delete(key), key).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      await expect(store.head(key), key).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    await expect(collect(store.list('../'))).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(await allFiles(store.directory)).toEqual([]);
  });

  it('a symbolic link at a key\'s path is no object: get and head fail with NOT_FOUND and list skips it', async () => {
    store = await tempStore('symlink');
    await store.put('real', Buffer.from('r'));
    await writeFile(join(store.directory, '..', `${store.directory.split('/').pop()}-outside`), 'secret');
    await symlink(`../${store.directory.split('/').pop()}-outside`, join(store.directory, 'link'));
    await expect(store.get('link')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(store.head('link')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await collect(store.list(''))).map((o) => o.key)).toEqual(['real']);
    await rm(`${store.directory}-outside`);
  });
});
