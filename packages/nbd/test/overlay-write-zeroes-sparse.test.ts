// OverlayFile.writeZeroes: whole blocks the sparse data file still has as a hole are only marked
// (the data file stays small), everything else gets zeros written; both read as zeros, also
// after a reopen. Real files; the backup under the overlay is a plain function of non-zero bytes.
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OverlayFile } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 64 * MiB;
const BS = 64 * KiB;
let dir: { path: string; remove: () => Promise<void> };
let n = 0;
const base = async (_offset: number, length: number): Promise<Buffer> => Buffer.alloc(length, 0x5a);
const identity = { backupId: 'b', size: SIZE };

beforeAll(async () => {
  dir = await tempDir('nbd-ovs-');
});
afterAll(async () => {
  await dir?.remove();
});

/** Bytes the file system allocated for `path`. */
async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

async function expectZeros(o: OverlayFile, offset: number, length: number): Promise<void> {
  expect(o.written(offset, length)).toEqual([{ offset, length }]);
  for (let at = offset; at < offset + length; at += 4 * MiB) {
    const n = Math.min(4 * MiB, offset + length - at);
    expect((await o.read(at, n)).equals(Buffer.alloc(n))).toBe(true);
  }
}

describe('OverlayFile.writeZeroes', () => {
  it('zeroing 60 MiB of a fresh overlay allocates (almost) nothing; the range reads as zeros, also after a reopen', async () => {
    const path = join(dir.path, `o${++n}.img`);
    const o = await OverlayFile.open(path, identity, base);
    // Unaligned ends: the first and last blocks are partial (copied from the backup, then zeroed).
    const offset = 2 * MiB + 100;
    const length = 60 * MiB;
    await o.writeZeroes(offset, length);
    await expectZeros(o, offset, length);
    expect((await o.read(offset - 100, 100)).equals(Buffer.alloc(100, 0x5a))).toBe(true); // the backup's bytes around
    expect((await o.read(offset + length, 100)).equals(Buffer.alloc(100, 0x5a))).toBe(true);
    await o.close();
    // Two partial blocks written (plus the file system's own rounding); 60 MiB written as zeros before.
    expect(await allocated(path)).toBeLessThan(MiB);
    const again = await OverlayFile.open(path, identity, base);
    try {
      await expectZeros(again, offset, length);
    } finally {
      await again.close();
    }
  });

  it('blocks written before (in the overlay, or with bytes in the data file) get zeros written', async () => {
    const path = join(dir.path, `o${++n}.img`);
    const o = await OverlayFile.open(path, identity, base);
    try {
      await o.write(4 * MiB, Buffer.alloc(2 * BS, 0x11)); // in the overlay
      await o.writeZeroes(4 * MiB, 2 * BS);
      await expectZeros(o, 4 * MiB, 2 * BS);
      expect(await allocated(path)).toBeGreaterThanOrEqual(2 * BS);
    } finally {
      await o.close();
    }
  });

  it('a block not in the overlay whose data file bytes are not zeros (written, then a crash before the flush) gets zeros written', async () => {
    const path = join(dir.path, `o${++n}.img`);
    await (await OverlayFile.open(path, identity, base)).close();
    const data = await open(path, 'r+');
    await data.write(Buffer.alloc(BS, 0x33), 0, BS, 16 * MiB);
    await data.close();
    const o = await OverlayFile.open(path, identity, base);
    try {
      expect(o.written(16 * MiB, BS)).toEqual([]);
      await o.writeZeroes(16 * MiB, 2 * BS);
      await expectZeros(o, 16 * MiB, 2 * BS);
    } finally {
      await o.close();
    }
  });

  it('with mayTrim false (NBD_CMD_FLAG_NO_HOLE) zeros are written: the range stays allocated', async () => {
    const path = join(dir.path, `o${++n}.img`);
    const o = await OverlayFile.open(path, identity, base);
    try {
      await o.writeZeroes(8 * MiB, 4 * MiB, false, false);
      await expectZeros(o, 8 * MiB, 4 * MiB);
      expect(await allocated(path)).toBeGreaterThanOrEqual(4 * MiB);
    } finally {
      await o.close();
    }
  });
});
