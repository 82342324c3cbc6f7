import { CairnError, isCairnError, noSpaceErrno } from '@cairn/core';

/**
 * Runs `fn`, which creates or writes `file` (an image, a sidecar, a bitmap, a lock or probe file,
 * a directory). When it fails because the file system is full (ENOSPC, or EDQUOT: a quota; core's
 * noSpaceErrno, on the error or its causes) the error becomes `UNAVAILABLE` naming the file: the
 * message says `<what> <file>: …`, `details.file` is the path and `details.errno` the errno (any
 * details already there are kept), `cause` the original error. Only a system error or an
 * `UNAVAILABLE` CairnError is taken for a full disk: a CairnError of any other code (`INVALID_INPUT`,
 * `CORRUPT`, `BUSY`, `CANCELLED`, …) keeps the code its thrower chose, whatever its causes say. An
 * error that names a file already (an inner call's) and every other error pass unchanged. Never
 * changes what `fn` did on disk: the callers' own clean-up (temporary files removed, sidecars left
 * as they were) still applies.
 */
export async function namingFullDisk<T>(file: string, what: string, driver: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw fullDiskError(err, file, what, driver) ?? err;
  }
}

/** namingFullDisk's error for `err`, or undefined when `err` is no full-disk error (a CairnError of another code than `UNAVAILABLE` never is) or names a file already. */
export function fullDiskError(err: unknown, file: string, what: string, driver: string): CairnError | undefined {
  if (isCairnError(err) && err.code !== 'UNAVAILABLE') return undefined; // its thrower's code stands
  const errno = noSpaceErrno(err);
  if (!errno) return undefined;
  const details = isCairnError(err) ? err.details : undefined;
  if (details && typeof details.file === 'string') return undefined;
  const reason = errno === 'EDQUOT' ? 'the disk quota is exhausted' : 'no space left on the file system';
  return new CairnError('UNAVAILABLE', `${what} ${file}: ${reason} (${(err as Error).message})`, { driver, cause: err, details: { ...details, file, errno } });
}
