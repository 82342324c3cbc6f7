/**
 * The filesystem primitives the store is built from, each durable when it returns: directories
 * created and their entries fsynced, temporary files written and fsynced, whole reads and
 * positional range reads that loop over short reads.
 */
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CairnError, DIRECT_IO_ALIGN, isDirectIoReady, openDirect, syncDir, writeDirect } from '@cairn/core';
import { DRIVER, errnoOf, fsError } from './fs-errors.js';
import { newTempName } from './key-layout.js';

/** Largest single write(2); bounds each syscall, not the object size. */
const WRITE_CHUNK = 8 * 1024 * 1024;

/** fsyncs a directory (core's syncDir: tolerates filesystems that cannot fsync directories). */
export const fsyncDir = syncDir;

/**
 * Creates `root/segments…` one level at a time (never `root` itself), fsyncing the parent of
 * every directory it created. Idempotent and safe against concurrent creators. `CONFLICT` when a
 * component exists as a file; `UNAVAILABLE` when `root` is gone; ENOSPC → `UNAVAILABLE`.
 * (Node's recursive mkdir is not used: it reports ENOENT for an ENOSPC in a parent.)
 */
export async function ensureDir(root: string, segments: readonly string[]): Promise<string> {
  const dir = join(root, ...segments);
  const st = await stat(dir).catch((err: unknown) => {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw errnoOf(err) === 'ENOTDIR' ? collision(segments, err) : fsError(err, `stat ${segments.join('/')}`);
  });
  if (st?.isDirectory()) return dir;
  if (st) throw collision(segments);
  for (let depth = 1; depth <= segments.length; depth++) await mkdirOne(root, segments.slice(0, depth));
  return dir;
}

async function mkdirOne(root: string, segments: readonly string[]): Promise<void> {
  const dir = join(root, ...segments);
  try {
    await mkdir(dir);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'EEXIST') {
      if ((await stat(dir).catch(() => undefined))?.isDirectory()) return;
      throw collision(segments, err);
    }
    if (code === 'ENOTDIR') throw collision(segments, err);
    if (code === 'ENOENT') {
      throw new CairnError('UNAVAILABLE', `the store's directory ${root} is missing`, { driver: DRIVER, cause: err });
    }
    throw fsError(err, `mkdir ${segments.join('/')}`);
  }
  await fsyncDir(dirname(dir));
}

function collision(segments: readonly string[], cause?: unknown): CairnError {
  return new CairnError('CONFLICT', `a key's directory ${segments.join('/')} collides with an object`, { driver: DRIVER, cause });
}

/** Writes all of `data` at `position` of an open (buffered) file, looping over short writes. */
export async function writeAll(fh: FileHandle, data: Uint8Array, position = 0): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const length = Math.min(WRITE_CHUNK, data.length - done);
    const { bytesWritten } = await fh.write(data, done, length, position + done);
    done += bytesWritten;
  }
}

/**
 * Creates a temporary file in `dir` exclusively (so never shared with another writer), opened for
 * writing with O_DIRECT when `direct` is asked and the file system allows it (`direct` in the
 * answer says which). Filesystem errors are thrown as they are; nothing is left behind.
 */
export async function createTempFile(dir: string, direct: boolean): Promise<{ path: string; fh: FileHandle; direct: boolean }> {
  const path = join(dir, newTempName());
  try {
    const directFh = direct ? await openDirect(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL) : undefined;
    return { path, fh: directFh ?? (await open(path, 'wx')), direct: directFh !== undefined };
  } catch (err) {
    await unlink(path).catch(() => undefined);
    throw err;
  }
}

/** Objects at least this large, in an aligned buffer, are written with O_DIRECT (see core's direct-io). */
const DIRECT_MIN = 1024 * 1024;

/**
 * Writes `data` to a new temporary file in `dir` (created exclusively, so never shared with
 * another writer), fsyncs and closes it, and returns its path. Large objects handed over in an
 * aligned buffer (pack files) bypass the page cache with O_DIRECT where the file system allows it;
 * the result is the same file. On any failure the temporary file is removed before the error
 * (mapped: ENOSPC → UNAVAILABLE) is thrown.
 */
export async function writeTempFile(dir: string, data: Uint8Array): Promise<string> {
  let path: string | undefined;
  let fh: FileHandle | undefined;
  try {
    let direct: boolean;
    ({ path, fh, direct } = await createTempFile(dir, data.length >= DIRECT_MIN && isDirectIoReady(data, 0)));
    if (direct) {
      await writeDirect(fh, data, 0);
      if (data.length % DIRECT_IO_ALIGN !== 0) await fh.truncate(data.length);
    } else {
      await writeAll(fh, data);
    }
    await fh.sync();
    const closing = fh;
    fh = undefined;
    await closing.close();
    return path;
  } catch (err) {
    await fh?.close().catch(() => undefined);
    if (path) await unlink(path).catch(() => undefined);
    throw fsError(err, 'writing a temporary file');
  }
}

/**
 * Links `temp` to `final` unless `final` exists: true when linked, false when `final` already
 * existed. Atomic across processes and NFS clients. An EEXIST after a lost NFS reply is resolved
 * the way open(2) recommends: if `temp` now has two links, our link did succeed.
 */
export async function linkIfAbsent(temp: string, final: string): Promise<boolean> {
  try {
    await link(temp, final);
    return true;
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') throw err;
    const st = await lstat(temp);
    return st.nlink >= 2;
  }
}

/** Reads exactly `length` bytes at `offset` into `out` with positional reads; returns `out[0, length)`. `CORRUPT` if the file is shorter. */
export async function readExactly(fh: FileHandle, offset: number, length: number, what: string, out: Buffer): Promise<Buffer> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, done, length - done, offset + done);
    if (bytesRead === 0) {
      throw new CairnError('CORRUPT', `${what} ended after ${done} of ${length} bytes`, { driver: DRIVER, details: { offset, length } });
    }
    done += bytesRead;
  }
  return out.subarray(0, length);
}

/**
 * Reads the bytes `[from, to)` of an O_DIRECT file into `span`, which starts at the aligned
 * offset `from` and is as long as the aligned end (util/direct-io's directReadSpan). Every read
 * asks for whole aligned blocks; only the file's end makes one short. `CORRUPT` when the file
 * ends before `to`.
 */
export async function readDirect(fh: FileHandle, span: Buffer, from: number, to: number, what: string): Promise<void> {
  let done = 0;
  while (from + done < to) {
    const { bytesRead } = await fh.read(span, done, span.length - done, from + done);
    if (bytesRead === 0) throw new CairnError('CORRUPT', `${what} ended after ${from + done} of ${to} bytes`, { driver: DRIVER, details: { offset: from, length: to - from } });
    done += bytesRead;
    if (from + done < to && done % DIRECT_IO_ALIGN !== 0) throw new CairnError('INTERNAL', `${what}: short O_DIRECT read of ${bytesRead} bytes`, { driver: DRIVER });
  }
}
