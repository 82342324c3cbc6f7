import { chmod, mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { CairnError } from '../errors.js';
import { syncDir } from './durable-file.js';

export interface MakeDirectoriesOptions {
  /**
   * Make the chain durable: resolve only once the entry of every level, down to `dir`, survives a
   * crash, provided every other creator of its levels made them with `durable` too. The parent of
   * every level this call makes, or whose mkdir says EEXIST (made meanwhile by another creator,
   * who may not have fsynced it yet), is fsynced before the next level is made; and so is the
   * parent of the deepest level found existing when the call starts, since its maker may still be
   * fsyncing it (the levels above it were durable before it was made). Each level's parent is
   * fsynced once per process: a later call in this process finds it known durable and fsyncs
   * nothing for it (a level removed and made again since by someone else is taken as its maker
   * left it). An existing level whose parent may not be opened (EACCES, EPERM: a directory this
   * process can search but not read) is taken as it is. Default: false.
   */
  durable?: boolean;
  /** Driver name for the `UNAVAILABLE` error (see makeDirectories). Default: none. */
  driver?: string;
  /**
   * Mode of every level this call makes, whatever the umask (mkdir with it, then chmod to it);
   * levels found existing, or made meanwhile by another creator (EEXIST), keep theirs. Default:
   * none (mkdir's 0777 less the umask).
   */
  mode?: number;
}

/** Bound on the levels remembered as durable (callers make a few store and staging directories). */
const REMEMBERED_MAX = 4096;
/** Levels whose entries this process made durable (fsynced their parents), by absolute path. */
const durableLevels = new Set<string>();

/**
 * mkdir -p without Node's recursive mkdir: makes the directory `dir` (resolved against the
 * working directory) and its missing parents one level at a time, top first. Idempotent; a level
 * that another call or process makes meanwhile is taken as it is, so concurrent creators of one
 * tree all succeed.
 *
 * `UNAVAILABLE` (details.file: the level) when mkdir of a level says ENOENT although its parent
 * was found or just made: a place that takes no new directories (/proc and its per-process
 * directories, a directory removed while still reached through /proc/<pid>/cwd or fd) or a parent
 * removed meanwhile. Node 20's `mkdir(dir, {recursive: true})` retries that case for ever (100%
 * CPU, deaf to SIGTERM); here every level is tried once. Every other failure is the system's error
 * as it is, for the caller to map: a file on the way is ENOTDIR, `dir` itself a file EEXIST,
 * EACCES/EPERM/EROFS/ENOSPC as mkdir (or, when `durable`, the fsync) gives them.
 */
export async function makeDirectories(dir: string, options: MakeDirectoriesOptions = {}): Promise<void> {
  const target = resolve(dir);
  /** The levels to make, top first: everything below the deepest path that exists. */
  const missing: string[] = [];
  /** The deepest level that exists as a directory, if any below the file system's root. */
  let existing: string | undefined;
  for (let at = target; dirname(at) !== at; at = dirname(at)) {
    const st = await stat(at).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined; // ENOTDIR: a file on the way, whose mkdir says so below
      throw err;
    });
    if (st) {
      // Not a directory: `dir` itself is tried (mkdir says EEXIST); higher up, the level under it says ENOTDIR.
      if (!st.isDirectory() && at === target) missing.unshift(at);
      if (st.isDirectory()) existing = at;
      break;
    }
    missing.unshift(at);
  }
  if (options.durable && existing !== undefined) await syncParent(existing, true);
  for (const level of missing) {
    try {
      await mkdir(level, options.mode);
      if (options.mode !== undefined) await chmod(level, options.mode);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && (await stat(level).catch(() => undefined))?.isDirectory()) {
        if (options.durable) await syncParent(level, false);
        continue;
      }
      if (code !== 'ENOENT') throw err;
      const message = `cannot create directory ${level}: mkdir says ENOENT although ${dirname(level)} is there (a place that takes no new directories, such as /proc, or one removed meanwhile)`;
      throw new CairnError('UNAVAILABLE', message, { driver: options.driver, cause: err, details: { file: level } });
    }
    if (options.durable) await syncParent(level, false);
  }
}

/**
 * fsyncs the parent of `level` and remembers it. `found`: the level existed when the call started;
 * then a level remembered is not fsynced again, and one whose parent may not be opened is skipped.
 * A level missing at the start is new whatever is remembered of its path, and always fsynced.
 */
async function syncParent(level: string, found: boolean): Promise<void> {
  if (found && durableLevels.has(level)) return;
  try {
    await syncDir(dirname(level));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!found || (code !== 'EACCES' && code !== 'EPERM')) throw err;
    return;
  }
  if (durableLevels.size >= REMEMBERED_MAX) durableLevels.clear();
  durableLevels.add(level);
}
