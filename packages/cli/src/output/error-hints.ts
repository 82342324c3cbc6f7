import { noSpaceErrno } from '@cairn/core';

/**
 * What the CLI suggests after an error whose remedy is the operator's, not Cairn's. A hint is
 * advice for a person: printed after the error line (`hint: …`) and as `error.hint` with `--json`,
 * never a stable interface (the error's code and `details` are).
 */
/** The hint for `err`, if there is one. */
export function hintFor(err: unknown): string | undefined {
  if (!noSpaceErrno(err)) return undefined;
  return (
    'the file system written to is full: free space on it (remove other files, or grow it) and retry. ' +
    'If it holds the repository, `cairn backup delete` of old backups and then `cairn repo gc` reclaim space in it, ' +
    'but both first write a small record or lock, so they too need a little free space'
  );
}
