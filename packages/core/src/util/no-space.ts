/** Errnos of a full file system: no space left, or a quota exhausted. */
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);

/** How deep a chain of causes is followed (each wrapper of the flow and the services adds one). */
const MAX_CAUSES = 16;

/**
 * The errno (`ENOSPC` or `EDQUOT`) when `err` says a file system is full: a system error's `code`,
 * or `details.errno` (which the posix store sets on its CairnErrors), on `err` or anywhere in its
 * chain of causes. Undefined for any other error.
 */
export function noSpaceErrno(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < MAX_CAUSES && e && typeof e === 'object'; depth++) {
    const { details, code, cause } = e as { details?: { errno?: unknown }; code?: unknown; cause?: unknown };
    for (const errno of [details?.errno, code]) if (typeof errno === 'string' && NO_SPACE.has(errno)) return errno;
    e = cause;
  }
  return undefined;
}
