import { lstat, realpath, stat } from 'node:fs/promises';
import { CairnError } from '@cairn/core';

/** The rule below as the commands' help states it (`--force`). */
export const WRITE_THROUGH_HELP = 'a symbolic link is written through, as cp does: the file it points to is replaced and the link kept; a dangling link is refused';

/**
 * The path a command that writes a whole file (`volume export`, `backup export --archive`) must
 * write `file` at, for the rule those commands share and document in their help:
 *
 * - A symbolic link is written through, as `cp` and shell redirection do: the returned path is
 *   the file the link points to (every link resolved, now), so the content replaces that file
 *   (temporary file and rename in the target's own directory) and the link itself is kept.
 *   A dangling link is refused with `INVALID_INPUT`, as GNU `cp` refuses to write through one.
 * - An existing file (or a link's target) is `ALREADY_EXISTS` unless `force`.
 * - Anything else is `file` itself, which need not exist yet.
 *
 * Only the start of the command is covered: a link changed while the command runs is not
 * followed again.
 */
export async function outputPath(file: string, force: boolean): Promise<string> {
  const link = await lstat(file).then(
    (s) => s.isSymbolicLink(),
    () => false,
  );
  let target = file;
  if (link) {
    target = await realpath(file).catch((cause: NodeJS.ErrnoException) => {
      throw new CairnError('INVALID_INPUT', `${file} is a symbolic link that leads to no file (${cause.code}); a dangling link is not written through`, { cause, details: { file } });
    });
  }
  if (!force && (await stat(target).then(() => true, () => false))) {
    throw new CairnError('ALREADY_EXISTS', `${link ? `${file} (a link to ${target})` : file} exists; pass --force to overwrite it`, { details: { file } });
  }
  return target;
}
