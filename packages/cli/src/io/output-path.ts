import type { Stats } from 'node:fs';
import { lstat, realpath, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError } from '@cairn/core';
import { assertEffectiveDirAccess } from './effective-access.js';
import { accessError } from './input-file.js';

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
 * - The path written must be a place for a file (checkOutputLocation): a directory there, or a
 *   directory that is missing or cannot be written, is refused before anything is written.
 * - A link in a sticky world-writable directory (/tmp) is written through only when it is this
 *   process's user's or the directory owner's, as Linux follows one (fs.protected_symlinks):
 *   another user may plant a link under the name a command is about to write, to make it replace
 *   a file of this user's (`UNAVAILABLE`, details.file). Resolving the link here would bypass the
 *   kernel's protection, so it is applied here too (to `file` itself, not to links in its directories).
 *
 * Only the start of the command is covered: a link changed while the command runs is not
 * followed again.
 */
export async function outputPath(file: string, force: boolean): Promise<string> {
  const st = await lstat(file).catch(() => undefined);
  const link = st?.isSymbolicLink() ?? false;
  let target = file;
  if (link) {
    await assertLinkMayBeFollowed(file, st!.uid);
    target = await realpath(file).catch((cause: NodeJS.ErrnoException) => {
      throw new CairnError('INVALID_INPUT', `${file} is a symbolic link that leads to no file (${cause.code}); a dangling link is not written through`, { cause, details: { file } });
    });
  }
  const exists = await checkOutputLocation(target);
  if (!force && exists) {
    throw new CairnError('ALREADY_EXISTS', `${link ? `${file} (a link to ${target})` : file} exists; pass --force to overwrite it`, { details: { file } });
  }
  return target;
}

/**
 * `UNAVAILABLE` when the link `file`, owned by `linkUid`, is in a sticky world-writable directory
 * and neither this process's user nor the directory's owner owns it (the rule of Linux's
 * fs.protected_symlinks, applied whatever that setting is, and to root too, as Linux does).
 */
async function assertLinkMayBeFollowed(file: string, linkUid: number): Promise<void> {
  const uid = process.geteuid?.();
  if (uid === undefined || linkUid === uid) return;
  const dir = await stat(dirname(file)).catch(() => undefined);
  if (!dir || (dir.mode & 0o1002) !== 0o1002 || dir.uid === linkUid) return;
  throw new CairnError('UNAVAILABLE', `${file} is a symbolic link of another user in sticky directory ${dirname(file)}: it is not written through (someone else may have planted it)`, { details: { file } });
}

/**
 * Checks that a file can be written at `file` (by a temporary file in its directory renamed over
 * it) and says whether one is there already. Anything at `file` but a regular file (a directory,
 * a character or block device such as /dev/null or /dev/sdb, a FIFO, a socket) is `INVALID_INPUT`
 * with `details.kind` (with or without `--force`: only a regular file is ever replaced); a missing directory is `NOT_FOUND`, a parent
 * that is a file `INVALID_INPUT`, a directory this process may not read and write in (by its
 * effective uid and gid: assertEffectiveDirAccess), or another user's file in a sticky directory,
 * `UNAVAILABLE`. Every error has `details.file`.
 */
export async function checkOutputLocation(file: string): Promise<boolean> {
  const existing = await stat(file).catch(() => undefined);
  if (existing?.isDirectory()) throw new CairnError('INVALID_INPUT', `${file} is a directory; name a file to write`, { details: { file, kind: 'directory' } });
  // The rename that publishes the output would replace a device node or FIFO with a regular file
  // (/dev/null, /dev/sdb: the device node gone, the data on devtmpfs). Writing into one is not
  // what these commands do: refused, as a directory is.
  if (existing && !existing.isFile()) {
    const kind = fileKind(existing);
    throw new CairnError('INVALID_INPUT', `${file} is a ${kind}, not a regular file: only a regular file is written or replaced; name a file to write`, { details: { file, kind } });
  }
  const dir = dirname(file);
  const parent = await stat(dir).catch((cause: NodeJS.ErrnoException) => {
    throw cause.code === 'ENOENT'
      ? new CairnError('NOT_FOUND', `directory ${dir} does not exist`, { cause, details: { file } })
      : cause.code === 'ENOTDIR'
        ? new CairnError('INVALID_INPUT', `${dir} is not a directory`, { cause, details: { file } })
        : accessError(cause, file, 'write', dir);
  });
  if (!parent.isDirectory()) throw new CairnError('INVALID_INPUT', `${dir} is not a directory`, { details: { file } });
  // Read too: publishing a file ends with an fsync of its directory, which opens it for reading.
  // By the effective uid, as the kernel judges the writes (and as the sticky rule below judges).
  await assertEffectiveDirAccess(dir, parent).catch((cause: unknown) => {
    throw accessError(cause, file, 'write', dir);
  });
  // In a sticky directory (/tmp) only the file's or the directory's owner may replace a file.
  // Owner as the kernel judges it when the rename comes: by the effective uid (as for a link,
  // assertLinkMayBeFollowed), not the real one, which differs in a setuid process or after
  // seteuid (and only an effective uid 0, not a real one, has the right to replace any file).
  const uid = process.geteuid?.();
  if (existing && uid !== undefined && uid !== 0 && (parent.mode & 0o1000) !== 0 && existing.uid !== uid && parent.uid !== uid) {
    throw new CairnError('UNAVAILABLE', `${file} belongs to another user in sticky directory ${dir}: it cannot be replaced`, { details: { file } });
  }
  return existing !== undefined;
}

/** What a file that is not a regular one is, in words (for the error checkOutputLocation raises). */
function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'directory';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  return 'special file';
}
