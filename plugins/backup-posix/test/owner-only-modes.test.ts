import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { alignedBuffer } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { RESERVE_NAME } from '../src/space-reserve.js';
import { ReserveMarker } from '../src/reserve-marker.js';
import { allFiles } from './helpers.js';

// A repository's objects and its `config` (an encrypted one's key material) must be readable and
// replaceable by their owner only, whatever the umask of the process that writes them.

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;
const KEY = `data/${'3c'.repeat(32)}`;

let scratch: string;
beforeEach(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'cairn-posix-modes-'));
});
afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** Runs `step` with the process's umask set to `mask`, restoring it after. */
async function underUmask<T>(mask: number, step: () => Promise<T>): Promise<T> {
  const before = process.umask(mask);
  try {
    return await step();
  } finally {
    process.umask(before);
  }
}

describe.each([0o000, 0o022, 0o277])('under umask %o', (mask) => {
  it('every file the store creates is 0600 and every directory it makes 0700, its own directory and the missing parents above it included', async () => {
    const directory = join(scratch, 'made', 'repo');
    await underUmask(mask, async () => {
      const store = await PosixObjectStore.open({ directory, reserveBytes: 64 * 1024 });
      await store.put('config', Buffer.from('{"sealedKey":"…"}'), { ifAbsent: true });
      await store.put(KEY, Buffer.from('pack'));
      await store.put('index/latest', Buffer.from('i'));
      const writer = await store.openWrite('packs/p1');
      await writer.append(alignedBuffer(1024 * 1024)); // O_DIRECT where the file system allows
      // The part write's temporary file, before its commit.
      const temps = (await allFiles(directory)).filter((f) => f.includes('~tmp-'));
      expect(temps).toHaveLength(1);
      expect(await mode(join(directory, temps[0]!))).toBe(0o600);
      await writer.append(Buffer.from('tail'));
      await writer.commit();
      expect(await store.ensureReserve()).toBe(true);
      const release = await new ReserveMarker(directory).take();
      expect(await mode(join(directory, '@reserve.making'))).toBe(0o600);
      await release?.();
    });
    for (const dir of [join(scratch, 'made'), directory, join(directory, 'data'), dirname(join(directory, 'data/3c/x')), join(directory, 'index'), join(directory, 'packs')]) {
      expect({ dir, mode: await mode(dir) }).toEqual({ dir, mode: 0o700 });
    }
    const files = await allFiles(directory);
    expect(files.sort()).toEqual(['config', `data/3c/${'3c'.repeat(32)}`, 'index/latest', 'packs/p1', RESERVE_NAME].sort());
    for (const file of files) expect({ file, mode: await mode(join(directory, file)) }).toEqual({ file, mode: 0o600 });
  });
});

it('leaves the modes of an existing repository’s directories and objects as they are, and makes only its new ones owner-only', async () => {
  const directory = join(scratch, 'old');
  await underUmask(0o022, async () => {
    await mkdir(join(directory, 'data'), { recursive: true });
    const store = await PosixObjectStore.open({ directory, reserveBytes: 0 });
    await store.put('index/a', Buffer.from('a'));
  });
  // Made group-readable by someone, on purpose (shared over NFS, say).
  await underUmask(0, async () => {
    await rm(join(directory, 'index'), { recursive: true });
    await mkdir(join(directory, 'index'), 0o750);
  });
  await underUmask(0o000, async () => {
    const store = await PosixObjectStore.open({ directory, reserveBytes: 0 });
    await store.put('index/b', Buffer.from('b'));
    await store.put(KEY, Buffer.from('pack'));
  });
  expect(await mode(directory)).toBe(0o755);
  expect(await mode(join(directory, 'data'))).toBe(0o755);
  expect(await mode(join(directory, 'index'))).toBe(0o750);
  expect(await mode(join(directory, 'data', '3c'))).toBe(0o700);
  expect(await mode(join(directory, 'index', 'b'))).toBe(0o600);
  expect(await readdir(join(directory, 'index'))).toEqual(['b']);
});
