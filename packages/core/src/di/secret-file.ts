/**
 * Reads a secret file (`file:/path` references: passphrases, key files, API tokens). Contract:
 * resolves with the content as UTF-8, one trailing newline (`\n` or `\r\n`) dropped. Reads at
 * most MAX_SECRET_BYTES: a secret is short, and a reference to `/dev/zero` or a never-ending pipe
 * must not fill memory. Pipes (`file:/dev/fd/63` from a shell's `<(…)`) and character devices
 * are read like files. Errors, tagged `registry`, with `details.file`:
 * - `NOT_FOUND`: the file does not exist (ENOENT, or a component of the path is a file: ENOTDIR);
 * - `INVALID_INPUT`: a wrong reference: a directory (EISDIR), a symlink loop (ELOOP), a name too
 *   long (ENAMETOOLONG), or content over MAX_SECRET_BYTES;
 * - `UNAVAILABLE`: the file is there but cannot be read now: permission denied (EACCES, EPERM),
 *   an I/O error (EIO), no file descriptors left, or any other failure (the errno in
 *   `details.errno`).
 */
import { CairnError } from '../errors.js';
import { readBounded } from '../util/read-bounded.js';

/** The most a secret file may hold. */
export const MAX_SECRET_BYTES = 64 * 1024;

export async function readSecretFile(file: string): Promise<string> {
  let content: Buffer;
  try {
    content = await readBounded(file, MAX_SECRET_BYTES, `secret file ${file}`);
  } catch (cause) {
    if (cause instanceof CairnError) throw new CairnError(cause.code, cause.message, { driver: 'registry', details: cause.details });
    throw secretFileError(file, cause);
  }
  return content.toString('utf8').replace(/\r?\n$/, '');
}

/** The error for a secret file that could not be read (see the file comment). */
function secretFileError(file: string, cause: unknown): CairnError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  const options = { driver: 'registry', cause, details: { file } };
  switch (code) {
    case 'ENOENT':
      return new CairnError('NOT_FOUND', `secret file ${file} does not exist`, options);
    case 'ENOTDIR':
      return new CairnError('NOT_FOUND', `secret file ${file} does not exist: a component of its path is not a directory`, options);
    case 'EISDIR':
      return new CairnError('INVALID_INPUT', `secret file ${file} is a directory, not a file`, options);
    case 'ELOOP':
      return new CairnError('INVALID_INPUT', `secret file ${file} is a loop of symbolic links`, options);
    case 'ENAMETOOLONG':
      return new CairnError('INVALID_INPUT', `secret file ${file}: the name is too long`, options);
    case 'EACCES':
    case 'EPERM':
      return new CairnError('UNAVAILABLE', `secret file ${file} cannot be read: permission denied (${code})`, options);
    default:
      return new CairnError('UNAVAILABLE', `secret file ${file} cannot be read${code ? ` (${code})` : ''}: ${(cause as Error)?.message ?? String(cause)}`, {
        ...options,
        details: { file, ...(code ? { errno: code } : {}) },
      });
  }
}
