import { noSpaceErrno } from '@cairn/core';

/**
 * What the CLI suggests after an error whose remedy is the operator's, not Cairn's. A hint is
 * advice for a person: printed after the error line (`hint: …`) and as `error.hint` with `--json`,
 * never a stable interface (the error's code and `details` are).
 */
/** Errors the full-file-system hint does not fit (withoutHint). */
const unhinted = new WeakSet<object>();

/**
 * Marks `err` as one no hint fits, and returns it: a failure to write the command's output to
 * stdout (reportStdoutFailure), whose full device (a redirect to a full disk, `/dev/full`) is
 * neither the repository nor one `cairn repo gc` could free.
 */
export function withoutHint<E extends object>(err: E): E {
  unhinted.add(err);
  return err;
}

/** The hint for `err`, if there is one: ENOSPC/EDQUOT anywhere in its causes, unless withoutHint marked it. */
export function hintFor(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && unhinted.has(err)) return undefined;
  if (!noSpaceErrno(err)) return undefined;
  return (
    'the file system written to is full: free space on it (remove other files, or grow it) and retry. ' +
    'If it holds the repository, `cairn backup delete` of old backups and then `cairn repo gc` reclaim space in it, ' +
    'but both first write a small record or lock, so they too need a little free space'
  );
}
