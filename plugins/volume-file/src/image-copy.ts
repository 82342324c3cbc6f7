import { constants } from 'node:fs';
import { copyFile, open, unlink, type FileHandle } from 'node:fs/promises';
import { writeFully, type Extent, type PositionalWriter } from '@cairn/core';
import { dataExtents, readFully } from './data-extents.js';

export type CopyMethod = 'reflink' | 'sparse-copy';

const CHUNK = 1024 * 1024;
/** Chunks copied concurrently. */
const IN_FLIGHT = 4;
/** errno values with which FICLONE says "this file system cannot share extents here". */
const NO_REFLINK = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY', 'EBADF', 'ENOTSOCK']);

/**
 * Copies image `src` to a new file `dst` (replaced if present) and makes it durable. First a
 * reflink (`COPYFILE_FICLONE_FORCE`: O(1), shares extents copy-on-write, on XFS/Btrfs/bcachefs),
 * else a sparse-preserving copy of only the data extents (holes stay holes). Returns the method used.
 * The caller keeps `src` from changing during the copy. Not idempotent. `driver` tags the errors
 * of the copy's writes.
 */
export async function copyImage(src: string, dst: string, driver: string): Promise<CopyMethod> {
  try {
    await copyFile(src, dst, constants.COPYFILE_FICLONE_FORCE);
    await syncFile(dst);
    return 'reflink';
  } catch (err) {
    if (!NO_REFLINK.has((err as { code?: string }).code ?? '')) throw err;
    await unlink(dst).catch(() => {});
  }
  await sparseCopy(src, dst, driver);
  return 'sparse-copy';
}

/** Copies the data extents of `src` into a same-sized sparse `dst` (copyExtents), then fsyncs it. */
export async function sparseCopy(src: string, dst: string, driver: string): Promise<void> {
  const from = await open(src, 'r');
  try {
    const size = (await from.stat()).size;
    const to = await open(dst, 'w', 0o600);
    try {
      await to.truncate(size);
      await copyExtents(from, to, await dataExtents(from, { offset: 0, length: size }), driver);
      await to.sync();
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}

/**
 * Copies the bytes of `extents` from `from` to the same offsets of `to` (1 MiB chunks, 4 in
 * flight). A write the file system takes nothing of fails `UNAVAILABLE` tagged `driver`
 * (core's writeFully); read and write errors are thrown as they are.
 */
export async function copyExtents(from: Pick<FileHandle, 'read'>, to: PositionalWriter, extents: readonly Extent[], driver: string): Promise<void> {
  const pieces: { pos: number; n: number }[] = [];
  for (const e of extents) {
    for (let pos = e.offset; pos < e.offset + e.length; pos += CHUNK) pieces.push({ pos, n: Math.min(CHUNK, e.offset + e.length - pos) });
  }
  let next = 0;
  const worker = async () => {
    const buf = Buffer.allocUnsafe(CHUNK);
    while (next < pieces.length) {
      const { pos, n } = pieces[next++]!;
      await readFully(from, buf.subarray(0, n), pos);
      await writeFully(to, buf.subarray(0, n), pos, { driver });
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
