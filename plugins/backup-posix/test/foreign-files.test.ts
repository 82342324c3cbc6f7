/**
 * Foreign files at a key's path that are not regular files: a FIFO, a Unix socket, a symbolic
 * link. They are no object: get, getInto, head fail with NOT_FOUND, promptly, and list skips
 * them (a plain open(2) of a FIFO blocks until a writer comes, for ever). Writes agree: an
 * only-if-absent put is CONFLICT, never ALREADY_EXISTS (which callers take as "stored").
 */
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DIRECT_IO_ALIGN, alignedBuffer } from '@cairn/core';
import type { PosixObjectStore } from '../src/index.js';
import { allFiles, collect, tempStore } from './helpers.js';

/** The outcome of `p`, or 'blocked' when it has not settled within `ms`. */
const within = <T>(p: Promise<T>, ms = 2000): Promise<T | 'blocked'> =>
  Promise.race([p, new Promise<'blocked'>((r) => setTimeout(() => r('blocked'), ms).unref())]);

describe('a FIFO, a socket or a symbolic link at a key\'s path is no object', () => {
  let store: PosixObjectStore;
  let server: Server | undefined;
  afterEach(async () => {
    // Release any reader still blocked in open(2) on the FIFO (it holds a libuv thread).
    for (let i = 0; i < 4; i++) await open(join(store.directory, 'fifo'), constants.O_WRONLY | constants.O_NONBLOCK).then((fh) => fh.close(), () => undefined);
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
    await rm(store.directory, { recursive: true, force: true });
  });

  it('get, ranged get, getInto (buffered and `once`) of a FIFO fail promptly with NOT_FOUND; head too; list skips it', async () => {
    store = await tempStore('fifo');
    await store.put('real', Buffer.from('r'));
    execFileSync('mkfifo', [join(store.directory, 'fifo')]);
    const laidOut = alignedBuffer(3 * DIRECT_IO_ALIGN).subarray(0, DIRECT_IO_ALIGN);
    const reads: [string, () => Promise<unknown>][] = [
      ['get', () => store.get('fifo')],
      ['ranged get', () => store.get('fifo', { offset: 0, length: 1 })],
      ['getInto', () => store.getInto('fifo', { offset: 0, length: 1 }, Buffer.alloc(1))],
      ['getInto once', () => store.getInto('fifo', { offset: 0, length: DIRECT_IO_ALIGN }, laidOut, { once: true })],
      ['head', () => store.head('fifo')],
    ];
    for (const [what, read] of reads) {
      const outcome = await within(read().then(() => 'resolved', (err: unknown) => err));
      expect(outcome, what).not.toBe('blocked');
      expect(outcome, what).toMatchObject({ code: 'NOT_FOUND' });
    }
    expect((await collect(store.list(''))).map((o) => o.key)).toEqual(['real']);
  });

  it('get of a Unix socket fails with NOT_FOUND (open(2) says ENXIO), as head does', async () => {
    store = await tempStore('socket');
    const path = join(store.directory, 'sock');
    server = createServer();
    await new Promise<void>((r) => server!.listen(path, r));
    await expect(store.get('sock')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(store.getInto('sock', { offset: 0, length: 1 }, Buffer.alloc(1))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(store.head('sock')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await collect(store.list(''))).toEqual([]);
  });

  it('put(ifAbsent) and openWrite(ifAbsent) onto a FIFO, a socket or a symbolic link fail with CONFLICT and leave it; put replaces it; delete removes it', async () => {
    store = await tempStore('foreign-write');
    const dir = store.directory;
    await writeFile(`${dir}-target`, 'outside');
    await mkdir(`${dir}-target-dir`);
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    server = createServer();
    await new Promise<void>((r) => server!.listen(join(dir, 'sock'), r));
    await symlink(`${dir}-target`, join(dir, 'link'));
    await symlink(`${dir}-target-dir`, join(dir, 'dirlink'));
    await symlink(join(dir, 'nothing'), join(dir, 'dangling'));
    // A sharded key's path, for a foreign file in a shard directory made by a put.
    const sharded = 'data/0123456789abcdef0123';
    await store.put('data/0123456789abcdef4567', Buffer.from('neighbour'));
    await symlink(`${dir}-target`, store.pathOf(sharded));
    const keys = ['fifo', 'sock', 'link', 'dirlink', 'dangling', sharded];
    for (const key of keys) {
      const before = await lstat(store.pathOf(key));
      await expect(store.put(key, Buffer.from('new'), { ifAbsent: true }), key).rejects.toMatchObject({ code: 'CONFLICT' });
      const w = await store.openWrite(key, { ifAbsent: true });
      await w.append(Buffer.from('new'));
      await expect(w.commit(), `${key} openWrite`).rejects.toMatchObject({ code: 'CONFLICT' });
      expect((await lstat(store.pathOf(key))).ino, `${key} left in place`).toBe(before.ino);
      await expect(store.get(key), key).rejects.toMatchObject({ code: 'NOT_FOUND' });
    }
    expect((await allFiles(dir)).filter((f) => f.includes('~')), 'temporary files left').toEqual([]);
    await store.put('fifo', Buffer.from('replaced'));
    expect((await store.get('fifo')).toString()).toBe('replaced');
    await store.put('link', Buffer.from('replaced'));
    expect((await store.get('link')).toString()).toBe('replaced');
    await store.delete('dangling');
    await store.put('dangling', Buffer.from('now'), { ifAbsent: true });
    expect((await store.get('dangling')).toString()).toBe('now');
    expect((await collect(store.list(''))).map((o) => o.key).sort()).toEqual(['dangling', 'data/0123456789abcdef4567', 'fifo', 'link']);
    expect(await readFile(`${dir}-target`, 'utf8')).toBe('outside');
    await rm(`${dir}-target`);
    await rm(`${dir}-target-dir`, { recursive: true });
  });
});
