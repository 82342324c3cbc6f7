import { CairnError, toCairnError } from '@cairn/core';

export const DRIVER = 'posix';

/** The errno-style code of a Node system error, if any. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Maps a filesystem error to a CairnError tagged `posix`. Beyond core's `toCairnError`
 * (ENOENT → NOT_FOUND, ENOSPC/EDQUOT/EROFS/EIO/EMFILE/ENFILE → UNAVAILABLE, …): ENOTDIR/EISDIR
 * → CONFLICT (a key collides with another key's directory), ENAMETOOLONG → INVALID_INPUT (a key
 * segment longer than the filesystem's name limit), EACCES/EPERM → UNAVAILABLE, ESTALE →
 * UNAVAILABLE.
 */
export function fsError(err: unknown, context: string): CairnError {
  if (err instanceof CairnError) return err;
  const local = LOCAL_CODES[errnoOf(err) ?? ''];
  if (local) return new CairnError(local, `${context}: ${(err as Error).message}`, { driver: DRIVER, cause: err });
  return toCairnError(err, DRIVER, context);
}

/**
 * Maps an error of a write (a put, a part write, their directories): as fsError, except that
 * ENOENT is `UNAVAILABLE` (retryable), not `NOT_FOUND`. On the write path a missing path means a
 * directory of the store, or the write's own temporary file, vanished (removed, or the store's
 * file system unmounted), not that some object is absent. A full file system (ENOSPC, or EDQUOT:
 * a quota) is `UNAVAILABLE` saying so, with `details.errno` (stable: front ends hint at the
 * remedy on it).
 */
export function writeError(err: unknown, context: string): CairnError {
  const errno = errnoOf(err);
  if (errno === 'ENOSPC' || errno === 'EDQUOT') {
    const what = errno === 'ENOSPC' ? 'no space left on the file system' : 'the disk quota is exhausted';
    return new CairnError('UNAVAILABLE', `${context}: ${what} (${(err as Error).message})`, { driver: DRIVER, cause: err, details: { errno } });
  }
  if (errno !== 'ENOENT') return fsError(err, context);
  return new CairnError('UNAVAILABLE', `${context}: a directory of the store, or the temporary file, vanished (${(err as Error).message})`, { driver: DRIVER, cause: err });
}

const LOCAL_CODES: Record<string, CairnError['code']> = {
  ENOTDIR: 'CONFLICT',
  EISDIR: 'CONFLICT',
  ENAMETOOLONG: 'INVALID_INPUT',
  EACCES: 'UNAVAILABLE',
  EPERM: 'UNAVAILABLE',
  ESTALE: 'UNAVAILABLE',
};

/** True for errors meaning "this path holds no object" (missing, or a component is not a directory). */
export function isAbsent(err: unknown): boolean {
  const code = errnoOf(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}
