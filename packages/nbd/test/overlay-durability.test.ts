// OverlayFile crash ordering: the map on disk may only claim blocks whose data was fsynced first.
// FLUSH (and FUA, and close) is the durability point; until then the on-disk map claims nothing
// new, so a crash loses unflushed writes (which NBD allows) but never reads zeros from the sparse
// data file where the backup had data.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OverlayFile } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

const KiB = 1024;
const MAP_HEADER = 4096;
let dir: { path: string; remove: () => Promise<void> };
let n = 0;

beforeAll(async () => {
  dir = await tempDir('nbd-ovd-');
});
afterAll(async () => {
  await dir?.remove();
});

/** The first byte of the map's bit array, as on disk now. */
async function mapOnDisk(path: string): Promise<number> {
  return (await readFile(`${path}.map`))[MAP_HEADER]!;
}

async function overlay(): Promise<{ o: OverlayFile; path: string }> {
  const path = join(dir.path, `o${++n}.img`);
  const base = async (_offset: number, length: number): Promise<Buffer> => Buffer.alloc(length, 0x5a);
  return { o: await OverlayFile.open(path, { backupId: 'b', size: 1024 * KiB }, base), path };
}

describe('OverlayFile durability', () => {
  it('writes are marked on disk only by flush, which syncs the data first; the session sees them at once', async () => {
    const { o, path } = await overlay();
    await o.write(0, Buffer.alloc(64 * KiB, 1)); // whole block 0
    await o.write(64 * KiB + 100, Buffer.alloc(10, 2)); // part of block 1, copied from the base first
    expect(o.written(0, 128 * KiB)).toEqual([{ offset: 0, length: 128 * KiB }]);
    expect((await o.read(64 * KiB + 98, 4)).equals(Buffer.from([0x5a, 0x5a, 2, 2]))).toBe(true);
    expect(await mapOnDisk(path)).toBe(0);
    await o.flush();
    expect(await mapOnDisk(path)).toBe(0b11);
    await o.close();
  });

  it('a FUA write is marked on disk before it resolves; close marks the rest', async () => {
    const { o, path } = await overlay();
    await o.write(2 * 64 * KiB, Buffer.alloc(4096, 3), true);
    expect(await mapOnDisk(path)).toBe(0b100);
    await o.write(3 * 64 * KiB, Buffer.alloc(4096, 4));
    expect(await mapOnDisk(path)).toBe(0b100);
    await o.close();
    expect(await mapOnDisk(path)).toBe(0b1100);
  });

  it('concurrent writes and flushes leave the on-disk map equal to the session map after a final flush', async () => {
    const { o, path } = await overlay();
    const jobs: Promise<void>[] = [];
    for (let b = 0; b < 8; b++) {
      jobs.push(o.write(b * 64 * KiB + 7, Buffer.alloc(100, b)));
      if (b % 3 === 0) jobs.push(o.flush());
    }
    await Promise.all(jobs);
    await o.flush();
    expect(await mapOnDisk(path)).toBe(0xff);
    await o.close();
  });
});
