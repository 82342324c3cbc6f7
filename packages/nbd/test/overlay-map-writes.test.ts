// OverlayFile writes its map with core's writeFully: a short write of the map bits at flush is
// continued, and one the file system takes nothing of (pwrite(2) returning 0, which a regular
// file here never does, so the overlay's map handle below forwards to its real file and takes
// only what the test allows) fails UNAVAILABLE instead of the flush succeeding with the map on
// disk partly written; the bits it did not write stay for the next flush.
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OverlayFile } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

const KiB = 1024;
const SIZE = 4096 * KiB;
const BLOCK = 4 * KiB;
const identity = { backupId: 'b', size: SIZE };
const base = async (_offset: number, length: number): Promise<Buffer> => Buffer.alloc(length, 0x5a);
let dir: { path: string; remove: () => Promise<void> };
let n = 0;

beforeAll(async () => {
  dir = await tempDir('nbd-ovm-');
});
afterAll(async () => {
  await dir?.remove();
});

/** Limits the overlay's map handle to `per()` bytes a write (0: takes nothing); counts writes. */
function stingyMap(o: OverlayFile, per: () => number): { calls: () => number } {
  const map = (o as unknown as { map: FileHandle }).map;
  const write = map.write.bind(map) as (b: Uint8Array, offset: number, length: number, position: number) => Promise<{ bytesWritten: number; buffer: Uint8Array }>;
  let calls = 0;
  Object.assign(map, {
    write: async (b: Uint8Array, offset: number, length: number, position: number) => {
      calls++;
      const took = Math.min(length, per());
      return took === 0 ? { bytesWritten: 0, buffer: b } : write(b, offset, took, position);
    },
  });
  return { calls: () => calls };
}

/** What a fresh open of the overlay at `path` (real handles) finds written. */
async function writtenOnDisk(path: string): Promise<unknown> {
  const o = await OverlayFile.open(path, identity, base);
  try {
    return o.written(0, SIZE);
  } finally {
    await o.close();
  }
}

describe('OverlayFile map writes', () => {
  it('flush continues short map writes: every block written before it is in the map on disk', async () => {
    const path = join(dir.path, `o${++n}.img`);
    const o = await OverlayFile.open(path, identity, base, { blockSize: BLOCK });
    const { calls } = stingyMap(o, () => 1);
    // 1 MiB at 0: blocks 0..255, 32 bytes of map bits.
    await o.write(0, Buffer.alloc(1024 * KiB, 7));
    await o.flush();
    await o.close();
    expect(await writtenOnDisk(path)).toEqual([{ offset: 0, length: 1024 * KiB }]);
    expect(calls()).toBe(32);
  });

  it('a map write that takes nothing fails the flush UNAVAILABLE, and the next flush writes the bits', async () => {
    const path = join(dir.path, `o${++n}.img`);
    const o = await OverlayFile.open(path, identity, base, { blockSize: BLOCK });
    let per = 0;
    stingyMap(o, () => per);
    await o.write(64 * KiB, Buffer.alloc(128 * KiB, 9)); // blocks 16..47: map bytes 2..5
    await expect(o.flush()).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      driver: 'backup-export',
      message: expect.stringMatching(/writing 4 bytes at offset 4098: .*wrote none/),
      details: { offset: 4098, length: 4 },
    });
    per = Infinity;
    await o.flush();
    await o.close();
    expect(await writtenOnDisk(path)).toEqual([{ offset: 64 * KiB, length: 128 * KiB }]);
  });
});
