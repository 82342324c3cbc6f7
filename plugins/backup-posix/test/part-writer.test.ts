import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { rm, stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { alignedBuffer } from '@cairn/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
import { allFiles, listKeys, tempStore } from './helpers.js';

const KEY = `packs/${'5d'.repeat(32)}`;
const temps = async (dir: string): Promise<string[]> => (await allFiles(dir)).filter((f) => f.includes('~'));

describe('openWrite on a directory', () => {
  let store: PosixObjectStore;
  afterEach(async () => rm(store.directory, { recursive: true, force: true }));

  it('writes into one temporary file of the key\'s directory, seen by no reader, and leaves no temporary file after commit', async () => {
    store = await tempStore('parts');
    const w = await store.openWrite(KEY, { ifAbsent: true });
    const part = alignedBuffer(1024 * 1024);
    part.fill(7);
    await w.append(part);
    await w.append(Buffer.from('tail'));
    const during = await temps(store.directory);
    expect(during).toHaveLength(1);
    expect(during[0]!.startsWith('packs/5d/')).toBe(true);
    expect((await stat(join(store.directory, during[0]!))).size).toBeGreaterThanOrEqual(1024 * 1024 + 4);
    expect(await listKeys(store)).toEqual([]);
    await w.commit();
    expect(await temps(store.directory)).toEqual([]);
    expect(await listKeys(store)).toEqual([KEY]);
    const got = await store.get(KEY);
    expect(got.length).toBe(1024 * 1024 + 4);
    expect(got.subarray(0, 1024 * 1024).every((b) => b === 7)).toBe(true);
    expect(got.subarray(1024 * 1024).toString()).toBe('tail');
  });

  it('abort, and a commit refused as ALREADY_EXISTS, remove the temporary file', async () => {
    store = await tempStore('parts-abort');
    const dropped = await store.openWrite(KEY);
    await dropped.append(Buffer.alloc(10_000, 1));
    await dropped.abort();
    expect(await allFiles(store.directory)).toEqual([]);
    await store.put(KEY, Buffer.from('first'));
    const late = await store.openWrite(KEY, { ifAbsent: true });
    await late.append(Buffer.alloc(10_000, 2));
    await expect(late.commit()).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    expect(await temps(store.directory)).toEqual([]);
    expect((await store.get(KEY)).toString()).toBe('first');
  });

  it('the temporary file of a writer that never finished is swept by sweepTemp, like a dead put\'s', async () => {
    store = await tempStore('parts-dead');
    const w = await store.openWrite(KEY);
    await w.append(Buffer.alloc(5000, 3));
    // The writer is never committed nor aborted (its process died).
    expect(await temps(store.directory)).toHaveLength(1);
    expect(await store.sweepTemp(0)).toBe(1);
    expect(await allFiles(store.directory)).toEqual([]);
    await expect(w.commit()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});

// A real full disk: a 1 MiB tmpfs, mounted in the group's beforeAll when we may (root); see
// disk-full.test.ts (not at the module's top level: a run filtering the group out leaked it).
let mountError = '';
function mountTmpfs(): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-posix-parts-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', dir], { stdio: 'pipe' });
    return dir;
  } catch (err) {
    mountError = String((err as Error).message).split('\n')[0]!;
    rmdirSync(dir);
    return undefined;
  }
}

describe('openWrite on a full disk (1 MiB tmpfs)', () => {
  let small: string | undefined;
  beforeAll(() => {
    small = mountTmpfs();
    if (!small) console.warn(`part-writer disk-full test skipped: cannot mount a tmpfs (${mountError})`);
  });
  afterAll(() => {
    if (!small) return;
    execFileSync('umount', [small]);
    rmdirSync(small);
  });

  it('an append past the free space fails with UNAVAILABLE, every later call fails, and no object, temporary file or block is left', async (ctx) => {
    if (!small) return ctx.skip();
    const store = await PosixObjectStore.open({ directory: small!, createDirectory: false });
    await store.put(`packs/${'5d'.repeat(31)}00`, Buffer.from('the shard directory exists'));
    const free = (await statfs(small!)).bfree;
    const w = await store.openWrite(KEY, { ifAbsent: true });
    const parts = Array.from({ length: 4 }, (_, i) => w.append(Buffer.alloc(512 * 1024, i)));
    const results = await Promise.allSettled(parts);
    expect(results.some((r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'UNAVAILABLE')).toBe(true);
    // Once one part failed, every part after it fails too: the object can never be published with a hole.
    const firstFailure = results.findIndex((r) => r.status === 'rejected');
    expect(results.slice(firstFailure).every((r) => r.status === 'rejected')).toBe(true);
    await expect(w.commit()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await w.abort();
    await expect(store.head(KEY)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await temps(small!)).toEqual([]);
    expect((await statfs(small!)).bfree).toBe(free);
  });
});
