/**
 * An object's file cut short while it is read (by something outside the store: the store itself
 * replaces objects by rename, so an open reader keeps the old file whole). get and getInto size the
 * range by fstat, then read: a file truncated in between ends early, and every read path, buffered
 * or O_DIRECT, reports it the same stable way: CORRUPT, naming where it ended.
 *
 * The truncation is timed by the call's own signal: its `aborted` is looked at before the open and
 * again before each read(2), so a signal whose second look truncates the file (and which never
 * aborts) cuts the real file between the fstat and the first read.
 */
import { truncateSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIRECT_IO_ALIGN, alignedBuffer } from '@cairn/core';
import type { PosixObjectStore } from '../src/index.js';
import { tempStore } from './helpers.js';

const KEY = `packs/${'7e'.repeat(32)}`;
const SIZE = 3 * DIRECT_IO_ALIGN + 100;

/** A signal that never aborts, whose second look at `aborted` truncates `path` to `to` bytes. */
function truncatingSignal(path: string, to: number): AbortSignal {
  let looks = 0;
  return {
    get aborted() {
      if (++looks === 2) truncateSync(path, to);
      return false;
    },
  } as AbortSignal;
}

describe('get and getInto of an object cut short while read', () => {
  let store: PosixObjectStore;
  beforeAll(async () => {
    store = await tempStore('truncated');
  });
  afterAll(async () => rm(store.directory, { recursive: true, force: true }));

  // Cut inside a block (5000), at a block boundary, and to nothing.
  for (const to of [5000, DIRECT_IO_ALIGN, 0]) {
    it(`cut to ${to} bytes: get, getInto and getInto with once (O_DIRECT; its last block read apart too) fail CORRUPT`, async () => {
      const reads: [string, (signal: AbortSignal) => Promise<unknown>][] = [
        ['get', (signal) => store.get(KEY, undefined, { signal })],
        ['getInto', (signal) => store.getInto(KEY, { offset: 0, length: SIZE }, Buffer.alloc(SIZE), { signal })],
        ['getInto once', (signal) => store.getInto(KEY, { offset: 0, length: SIZE }, alignedBuffer(SIZE + 2 * DIRECT_IO_ALIGN).subarray(0, SIZE), { once: true, signal })],
        // `into` longer than the range: the range's last block is read into a block of its own.
        ['getInto once, last block apart', (signal) => store.getInto(KEY, { offset: 0, length: SIZE - 50 }, alignedBuffer(2 * SIZE).subarray(0, SIZE), { once: true, signal })],
      ];
      for (const [name, read] of reads) {
        await store.put(KEY, Buffer.alloc(SIZE, 7));
        const err = await read(truncatingSignal(store.pathOf(KEY), to)).then(() => undefined, (e: unknown) => e);
        expect(err, name).toMatchObject({ code: 'CORRUPT', driver: 'posix', message: expect.stringContaining(`ended after ${to} of`) });
      }
    });
  }
});
