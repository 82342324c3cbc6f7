// OverlayFile writes its data file with core's writeFully: short writes are continued, and a write
// the file system takes nothing of (pwrite(2) returning 0, which a regular file here never does,
// so the overlay's data handle below forwards to its real file and then stops taking bytes) fails
// UNAVAILABLE naming offset and length instead of being retried for ever.
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OverlayFile } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

const KiB = 1024;
let dir: { path: string; remove: () => Promise<void> };
let n = 0;

beforeAll(async () => {
  dir = await tempDir('nbd-ovz-');
});
afterAll(async () => {
  await dir?.remove();
});

/** An overlay whose data file takes at most `per` bytes a write, and none once `budget` bytes are written. */
async function stingyOverlay(per: number, budget: number): Promise<{ o: OverlayFile; calls: () => number }> {
  const base = async (_offset: number, length: number): Promise<Buffer> => Buffer.alloc(length, 0x5a);
  const o = await OverlayFile.open(join(dir.path, `o${++n}.img`), { backupId: 'b', size: 1024 * KiB }, base);
  const data = (o as unknown as { data: FileHandle }).data;
  const write = data.write.bind(data) as (b: Uint8Array, offset: number, length: number, position: number) => Promise<{ bytesWritten: number; buffer: Uint8Array }>;
  let left = budget;
  let calls = 0;
  Object.assign(data, {
    write: async (b: Uint8Array, offset: number, length: number, position: number) => {
      // The old loop never stopped: end it here, so that it fails instead of hanging the run.
      if (++calls > 1000) throw new Error('the overlay kept retrying a write that takes nothing');
      const took = Math.min(length, per, left);
      left -= took;
      return took === 0 ? { bytesWritten: 0, buffer: b } : write(b, offset, took, position);
    },
  });
  return { o, calls: () => calls };
}

describe('OverlayFile data writes', () => {
  it('continue short writes until everything is written (control)', async () => {
    const { o } = await stingyOverlay(1000, Infinity);
    await o.write(64 * KiB, Buffer.alloc(64 * KiB, 3));
    expect((await o.read(64 * KiB, 64 * KiB)).equals(Buffer.alloc(64 * KiB, 3))).toBe(true);
    await o.close();
  });

  it('a write that takes nothing fails UNAVAILABLE naming offset and length, and marks no block', async () => {
    const { o, calls } = await stingyOverlay(4096, 8192);
    await expect(o.write(0, Buffer.alloc(64 * KiB, 1))).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      driver: 'backup-export',
      message: expect.stringMatching(/writing 57344 bytes at offset 8192: .*wrote none/),
      details: { offset: 8192, length: 57344 },
    });
    expect(calls()).toBe(3);
    expect(o.written(0, 64 * KiB)).toEqual([]);
    await o.close();
  });
});
