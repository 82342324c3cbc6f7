import { constants } from 'node:fs';
import { copyFile, open, unlink, type FileHandle } from 'node:fs/promises';
import { CairnError, readFully, writeFully, type Extent, type PositionalWriter } from '@cairn/core';
import { dataExtents } from './data-extents.js';

export type CopyMethod = 'reflink' | 'sparse-copy';

const CHUNK = 1024 * 1024;
/** Chunks copied concurrently. */
const IN_FLIGHT = 4;
/** errno values with which FICLONE says "this file system cannot share extents here". */
const NO_REFLINK = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY', 'EBADF', 'ENOTSOCK']);

/**
 * Copies image `src` to a new file `dst` and makes it durable. `dst` is created exclusively: when
 * anything is at `dst` already (a file, a symlink planted there, dangling or not) the copy fails
 * `ALREADY_EXISTS` (details.file) and that entry and whatever it points to stay untouched. First a
 * reflink (`COPYFILE_FICLONE_FORCE`: O(1), shares extents copy-on-write, on XFS/Btrfs/bcachefs),
 * else a sparse-preserving copy of only the data extents (holes stay holes). Returns the method used.
 * The caller keeps `src` from changing during the copy. Not idempotent. `driver` tags the errors
 * of the copy's writes.
 */
export async function copyImage(src: string, dst: string, driver: string): Promise<CopyMethod> {
  try {
    // COPYFILE_EXCL: O_CREAT|O_EXCL, never through a symlink, never truncating another file
    await copyFile(src, dst, constants.COPYFILE_FICLONE_FORCE | constants.COPYFILE_EXCL);
    await syncFile(dst);
    return 'reflink';
  } catch (err) {
    if (!NO_REFLINK.has((err as { code?: string }).code ?? '')) throw taken(err, dst, driver);
    await unlink(dst).catch(() => {}); // the empty file made before FICLONE was refused (unlink never follows a symlink)
  }
  await sparseCopy(src, dst, driver);
  return 'sparse-copy';
}

/**
 * Copies the data extents of `src` into a same-sized sparse new file `dst` (copyExtents), then
 * fsyncs it. `dst` is created exclusively ('wx': O_CREAT|O_EXCL): `ALREADY_EXISTS` when anything,
 * a symlink too, is there, which is left as it is.
 */
export async function sparseCopy(src: string, dst: string, driver: string): Promise<void> {
  const from = await open(src, 'r');
  try {
    const size = (await from.stat()).size;
    const to = await open(dst, 'wx', 0o600).catch((err: unknown) => {
      throw taken(err, dst, driver);
    });
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
      buf.fill(0, await readFully(from, buf.subarray(0, n), pos), n); // past the source's end: zeros
      await writeFully(to, buf.subarray(0, n), pos, { driver });
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

/** EEXIST from creating `dst` as `ALREADY_EXISTS` naming it; any other error as it is. */
function taken(err: unknown, dst: string, driver: string): unknown {
  if ((err as { code?: string }).code !== 'EEXIST') return err;
  return new CairnError('ALREADY_EXISTS', `cannot copy an image to ${dst}: something is there already`, { driver, cause: err, details: { file: dst } });
}

/** fsyncs the file the copy has just made at `path`; O_NOFOLLOW: a symlink put in its place meanwhile is refused (ELOOP). */
async function syncFile(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
