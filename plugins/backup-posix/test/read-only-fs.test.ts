/**
 * A store on a read-only file system (a repository on a mount made read-only, or remounted so
 * after errors): reads work, every write is UNAVAILABLE leaving nothing, and delete stays
 * idempotent: Linux refuses unlink(2) there with EROFS before it looks the name up, so an absent
 * key must be told from a present one by looking. A real read-only mount: a read-only bind mount
 * of a tmpfs, made when we may (root).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
import { allFiles, listKeys } from './helpers.js';

const SHARDED = `data/${'cd'.repeat(32)}`;

describe('a store on a read-only file system (read-only bind mount of a tmpfs)', () => {
  const mounts: string[] = [];
  let rw: string | undefined;
  let ro: string | undefined;
  let mountError = '';

  beforeAll(async () => {
    try {
      const base = mkdtempSync(join(tmpdir(), 'cairn-posix-rofs-'));
      rw = join(base, 'rw');
      ro = join(base, 'ro');
      await mkdir(rw);
      await mkdir(ro);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'tmpfs', rw], { stdio: 'pipe' });
      mounts.push(rw);
      const writer = await PosixObjectStore.open({ directory: join(rw, 'store'), reserveBytes: 0 });
      await writer.put('index/latest', Buffer.from('kept'));
      await writer.put(SHARDED, Buffer.from('sharded'));
      await mkdir(join(rw, 'store', 'dironly', 'sub'), { recursive: true });
      execFileSync('mount', ['--bind', rw, ro], { stdio: 'pipe' });
      mounts.push(ro);
      execFileSync('mount', ['-o', 'remount,ro,bind', ro], { stdio: 'pipe' });
    } catch (err) {
      mountError = String((err as Error).message).split('\n')[0]!;
      ro = undefined;
      console.warn(`read-only tests skipped: cannot mount (${mountError})`);
    }
  });
  afterAll(() => {
    for (const dir of mounts.splice(0).reverse()) execFileSync('umount', [dir]);
    if (rw) {
      rmdirSync(rw);
      rmdirSync(ro ?? join(rw, '..', 'ro'));
      rmdirSync(join(rw, '..'));
    }
  });

  it('delete of an absent key, or of a directory of other keys, succeeds; delete of an object is UNAVAILABLE and keeps it', async (ctx) => {
    if (!ro) return ctx.skip();
    const store = await PosixObjectStore.open({ directory: join(ro, 'store'), createDirectory: false, reserveBytes: 0 });
    await store.delete('index/gone');
    await store.delete(`data/${'ef'.repeat(32)}`);
    await store.delete('nodir/gone');
    await store.delete('dironly/sub');
    await expect(store.delete('index/latest')).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'posix' });
    await expect(store.delete(SHARDED)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect((await store.get('index/latest')).toString()).toBe('kept');
    expect(await listKeys(store)).toEqual([SHARDED, 'index/latest'].sort());
  });

  it('puts, part writes and sweeps are UNAVAILABLE and leave nothing; reads work', async (ctx) => {
    if (!ro) return ctx.skip();
    const store = await PosixObjectStore.open({ directory: join(ro, 'store'), createDirectory: false, reserveBytes: 0 });
    const before = await allFiles(join(rw!, 'store'));
    await expect(store.put('index/latest', Buffer.from('new'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(store.put('fresh/dir/key', Buffer.from('new'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(store.put('index/other', Buffer.from('new'), { ifAbsent: true })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(store.openWrite('index/parts')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(await store.sweepTemp(0)).toBe(0);
    expect(await allFiles(join(rw!, 'store'))).toEqual(before);
    expect((await store.get(SHARDED, { offset: 1, length: 3 })).toString()).toBe('har');
    expect((await store.head('index/latest')).size).toBe(4);
  });
});
