import { isAbsolute } from 'node:path';
import { knownOptions, optionError } from '@cairn/core';
import { DRIVER } from './fs-errors.js';

/** Options of the `posix` object store. */
export interface PosixObjectStoreOptions {
  /**
   * Absolute path of the directory that holds the objects: local disk or an NFS mount.
   * Required. Two stores (in any processes or on any NFS clients) may share one directory.
   */
  directory: string;
  /**
   * Create `directory` (and its parents) when it does not exist. Default `true`. Set `false`
   * for a store on a mount, so that a missing mount fails with `UNAVAILABLE` instead of writing
   * backups to the disk under it. With `false` the directory found at open is pinned (device and
   * inode number): once its path leads elsewhere (the mount went away, the directory was
   * replaced), every write that would create a directory or write directly in it fails
   * `UNAVAILABLE` and creates nothing, and so do deletes, listings and reads that would answer
   * "absent" or found their file on another device (PosixObjectStore.open), until the path leads to that directory again (a file system
   * mounted again may have another device number: open the store again). What this does not catch: a store opened while the
   * mount is already missing. A bare mount point exists (empty) when unmounted, so a store opened
   * on it then pins the disk under it; point `directory` at a subdirectory of the mount (made
   * beforehand), which does not exist while unmounted, so that open fails `UNAVAILABLE`.
   */
  createDirectory?: boolean;
  /**
   * Bytes of the space reserve (space-reserve.ts): a file of random bytes in `directory` that a
   * write of an operation freeing space (a backup's delete, a GC) may give up when the file system
   * is full. A non-negative integer; default DEFAULT_RESERVE_BYTES (64 MiB); 0 disables it.
   */
  reserveBytes?: number;
}

const KNOWN = ['directory', 'createDirectory', 'reserveBytes'] as const;
const invalid = (option: string, problem: string) => optionError(DRIVER, option, problem);

/**
 * Validates factory options. `INVALID_INPUT` with `details.option` naming the bad option:
 * `directory` missing, not a string or not absolute; `createDirectory` not a boolean;
 * `reserveBytes` not a non-negative safe integer; any unknown option (a typo would otherwise be
 * ignored silently).
 */
export function parsePosixOptions(raw: unknown): PosixObjectStoreOptions {
  const { directory, createDirectory, reserveBytes } = knownOptions(raw, KNOWN, DRIVER, 'directory');
  if (typeof directory !== 'string' || directory === '') throw invalid('directory', 'is required (an absolute path)');
  if (!isAbsolute(directory)) throw invalid('directory', `must be an absolute path, got ${JSON.stringify(directory)}`);
  if (directory.includes('\0')) throw invalid('directory', 'must not contain NUL');
  if (createDirectory !== undefined && typeof createDirectory !== 'boolean') throw invalid('createDirectory', 'must be a boolean');
  if (reserveBytes !== undefined && !(typeof reserveBytes === 'number' && Number.isSafeInteger(reserveBytes) && reserveBytes >= 0)) {
    throw invalid('reserveBytes', `must be a non-negative integer (bytes; 0 disables the reserve), got ${typeof reserveBytes === 'string' ? JSON.stringify(reserveBytes) : String(reserveBytes)}`);
  }
  return {
    directory,
    ...(createDirectory === undefined ? {} : { createDirectory }),
    ...(reserveBytes === undefined ? {} : { reserveBytes }),
  };
}
