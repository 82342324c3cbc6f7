import { access, constants, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { CairnError, readBounded as readBoundedBytes } from '@cairn/core';

/**
 * Checks, before any work, that `file` (an input a command was given: an image, an archive, a
 * record) can be read as a whole file: missing is `NOT_FOUND`, a directory, device or FIFO is
 * `INVALID_INPUT`, no permission to read it is `UNAVAILABLE` (as for a config file that cannot be
 * read). With `stream`, for an input read once from start to end (a record), a FIFO, character
 * device or socket is accepted too (`<(…)`, /dev/stdin): read it with readBounded. `what` names
 * the file in messages ("image", "archive"). Every error has `details.file`.
 */
export async function checkInputFile(file: string, what: string, options: { stream?: boolean } = {}): Promise<void> {
  const info = await stat(file).catch((cause: NodeJS.ErrnoException) => {
    throw cause.code === 'ENOENT' || cause.code === 'ENOTDIR'
      ? new CairnError('NOT_FOUND', `${what} ${file} does not exist`, { cause, details: { file } })
      : accessError(cause, file, 'read');
  });
  const streamed = options.stream === true && (info.isFIFO() || info.isCharacterDevice() || info.isSocket());
  if (!info.isFile() && !streamed) throw new CairnError('INVALID_INPUT', `${what} ${file} is ${info.isDirectory() ? 'a directory' : 'not a regular file'}`, { details: { file } });
  await access(file, constants.R_OK).catch((cause: unknown) => {
    throw accessError(cause, file, 'read');
  });
}

/**
 * A failure to read or write a file the user named, as a CairnError: no permission (EACCES,
 * EPERM) is `UNAVAILABLE` saying which file (and `dir` when the permission missing is that of
 * its directory); any other error is returned unchanged (the output maps system errors by their
 * code).
 */
export function accessError(err: unknown, file: string, doing: 'read' | 'write', dir?: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'EACCES' && code !== 'EPERM') return err;
  const where = dir === undefined ? '' : ` in directory ${dir}`;
  return new CairnError('UNAVAILABLE', `${file} cannot be ${doing === 'read' ? 'read' : 'written'}: permission denied${where} (${code})`, { cause: err, details: { file } });
}

/**
 * Reads `input` (a file path, or a stream such as stdin) whole, as UTF-8, refusing more than
 * `limit` bytes with `INVALID_INPUT` (core's readBounded). Read errors of a path are as
 * accessError maps them.
 */
export async function readBounded(input: string | Readable, limit: number, what: string): Promise<string> {
  try {
    return (await readBoundedBytes(input, limit, what)).toString('utf8');
  } catch (err) {
    throw typeof input === 'string' ? accessError(err, input, 'read') : err;
  }
}
