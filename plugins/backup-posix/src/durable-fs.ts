/**
 * The filesystem primitives the store is built from: temporary files created exclusively, written
 * and fsynced (durable when they return), publishing by link, whole reads and positional range
 * reads that loop over short reads. Directories: directory-chain.ts.
 */
import { constants, type BigIntStats } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, DIRECT_IO_ALIGN, isDirectIoReady, linkIfAbsent, openDirect, openOwnerOnly, readFully, syncDir, throwIfAborted, writeDirect, writeFully, type PositionalWriter } from '@cairn/core';
import { DRIVER, errnoOf, writeError } from './fs-errors.js';
import { newTempName } from './key-layout.js';
import { keepFresh } from './temp-refresh.js';

/** Largest single write(2); bounds each syscall, not the object size. */
const WRITE_CHUNK = 8 * 1024 * 1024;
/**
 * Largest single read(2) (a multiple of the O_DIRECT alignment): a long read checks its signal
 * between such reads. A syscall already in the kernel cannot be interrupted (on a dead NFS server
 * it waits for the server); the check comes before the next one.
 */
const READ_CHUNK = 8 * 1024 * 1024;

/** `CANCELLED` (tagged posix) when `signal` is aborted: checked between the steps of a call. */
export function checkSignal(signal: AbortSignal | undefined): void {
  throwIfAborted(signal, DRIVER);
}

/** fsyncs a directory (core's syncDir: tolerates filesystems that cannot fsync directories). */
export const fsyncDir = syncDir;

/**
 * fsyncs the directory `dir` as fsyncDir does, and returns the stat of the directory fsynced
 * (from the same open handle, so never of another directory that took its path meanwhile).
 */
export async function fsyncDirStat(dir: string): Promise<BigIntStats> {
  const fh = await open(dir, 'r');
  try {
    const [, st] = await Promise.all([
      fh.sync().catch((err: unknown) => {
        const code = errnoOf(err);
        if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
      }),
      fh.stat({ bigint: true }),
    ]);
    return st;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * Writes all of `data` at `position` of an open (buffered) file, looping over short writes (core's
 * writeFully, at most WRITE_CHUNK a write(2)); once `signal` aborts no further write(2) starts
 * (`CANCELLED`). A write that takes nothing fails `UNAVAILABLE` (tagged posix) naming the offset
 * and length left, instead of being retried for ever.
 */
export async function writeAll(fh: PositionalWriter, data: Uint8Array, position = 0, signal?: AbortSignal): Promise<void> {
  await writeFully(fh, data, position, { driver: DRIVER, signal, maxWrite: WRITE_CHUNK });
}

/**
 * Creates a temporary file in `dir` with O_CREAT|O_EXCL (so never shared with another writer),
 * mode FILE_MODE (core's openOwnerOnly), opened for writing; with O_DIRECT when `direct` is asked and the file system allows it
 * (`direct` in the answer says which). The file is created buffered and then opened a second
 * time with O_DIRECT, because a file system without O_DIRECT (ramfs, some FUSE mounts, tmpfs
 * before Linux 6.6) may create the file before refusing the flag. Filesystem errors are thrown
 * as they are; on a failure after the file was created it is removed, and only then: a name
 * taken by another file (EEXIST) leaves that file alone.
 */
export async function createTempFile(dir: string, direct: boolean): Promise<{ path: string; fh: FileHandle; direct: boolean }> {
  const path = join(dir, newTempName());
  const fh = await openOwnerOnly(path, FILE_MODE);
  if (!direct) return { path, fh, direct: false };
  try {
    const directFh = await openDirect(path, constants.O_WRONLY);
    if (!directFh) return { path, fh, direct: false };
    await fh.close().catch(() => undefined); // nothing was written through it
    return { path, fh: directFh, direct: true };
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw err;
  }
}

/** Mode of every file the store creates (objects, temporary files, the reserve and its marker): owner only. */
export const FILE_MODE = 0o600;
/** Mode of every directory the store creates (its own directory included, when it makes it): owner only. */
export const DIRECTORY_MODE = 0o700;

/** Objects at least this large, in an aligned buffer, are written with O_DIRECT (see core's direct-io). */
const DIRECT_MIN = 1024 * 1024;

/**
 * Writes `data` to a new temporary file in `dir` (created exclusively, so never shared with
 * another writer), fsyncs and closes it, and returns its path. Large objects handed over in an
 * aligned buffer (pack files) bypass the page cache with O_DIRECT where the file system allows it;
 * the result is the same file. The file is kept fresh while open (temp-refresh.ts). On any
 * failure the temporary file is removed before the error (writeError: ENOSPC, or `dir` gone →
 * UNAVAILABLE) is thrown. `signal` is checked before the file is made and between its steps
 * (each write(2), the fsync): once aborted, `CANCELLED`, and the file is removed. `what` begins
 * the error's message (a put names its key).
 */
export async function writeTempFile(dir: string, data: Uint8Array, signal?: AbortSignal, what = 'writing a temporary file'): Promise<string> {
  let path: string | undefined;
  let fh: FileHandle | undefined;
  const stopRefresh = keepFresh(() => fh);
  try {
    let direct: boolean;
    checkSignal(signal);
    ({ path, fh, direct } = await createTempFile(dir, data.length >= DIRECT_MIN && isDirectIoReady(data, 0)));
    if (direct) {
      await writeDirect(fh, data, 0, signal);
      if (data.length % DIRECT_IO_ALIGN !== 0) await fh.truncate(data.length);
    } else {
      await writeAll(fh, data, 0, signal);
    }
    checkSignal(signal);
    await fh.sync();
    const closing = fh;
    fh = undefined;
    await closing.close();
    checkSignal(signal);
    return path;
  } catch (err) {
    await fh?.close().catch(() => undefined);
    if (path) await unlink(path).catch(() => undefined);
    throw writeError(err, what);
  } finally {
    stopRefresh();
  }
}

/** Publishing by link where nothing is (core's linkIfAbsent: atomic across processes and NFS clients). */
export { linkIfAbsent };

/**
 * Reads exactly `length` bytes at `offset` into `out` with positional reads (at most READ_CHUNK
 * each; `signal` checked before each); returns `out[0, length)`. `CORRUPT` if the file is shorter.
 */
export async function readExactly(fh: FileHandle, offset: number, length: number, what: string, out: Buffer, signal?: AbortSignal): Promise<Buffer> {
  const into = out.subarray(0, length);
  const done = await readFully(fh, into, offset, { driver: DRIVER, signal, maxRead: READ_CHUNK });
  if (done < length) throw new CairnError('CORRUPT', `${what} ended after ${done} of ${length} bytes`, { driver: DRIVER, details: { offset, length } });
  return into;
}

/**
 * Reads the bytes `[from, to)` of an O_DIRECT file into `span`, which starts at the aligned
 * offset `from` and is as long as the aligned end (util/direct-io's directReadSpan). Every read
 * asks for whole aligned blocks (at most READ_CHUNK; `signal` checked before each); only the
 * file's end makes one short. `CORRUPT` when the file ends before `to` (cut short since its
 * size was read), as readExactly says for buffered reads.
 */
export async function readDirect(fh: FileHandle, span: Buffer, from: number, to: number, what: string, signal?: AbortSignal): Promise<void> {
  let done = 0;
  while (from + done < to) {
    checkSignal(signal);
    const { bytesRead } = await fh.read(span, done, Math.min(READ_CHUNK, span.length - done), from + done);
    done += bytesRead;
    // An O_DIRECT read returns whole blocks but at the file's end: one that returns nothing, or
    // ends off a block, before `to` met the end (the file was cut short after its fstat).
    if (from + done < to && (bytesRead === 0 || done % DIRECT_IO_ALIGN !== 0)) {
      throw new CairnError('CORRUPT', `${what} ended after ${from + done} of ${to} bytes`, { driver: DRIVER, details: { offset: from, length: to - from } });
    }
  }
}
