import { mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { CairnError } from '../errors.js';
import { syncDir } from './durable-file.js';

export interface MakeDirectoriesOptions {
  /**
   * fsync the parent of every level this call makes, and of every level whose mkdir says EEXIST
   * (made meanwhile by another creator, who may not have fsynced it yet), before it makes the
   * next. Levels the call finds existing when it starts are taken as they are, without an fsync
   * (so that a directory that is there costs nothing): the chain survives a crash once the call
   * returns if those were made durable by their makers, as calls with `durable` make them, but
   * not if their maker has not fsynced them yet (a plain mkdir, or a durable call still under
   * way). Default: false.
   */
  durable?: boolean;
  /** Driver name for the `UNAVAILABLE` error (see makeDirectories). Default: none. */
  driver?: string;
}

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
  for (let at = target; dirname(at) !== at; at = dirname(at)) {
    const st = await stat(at).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined; // ENOTDIR: a file on the way, whose mkdir says so below
      throw err;
    });
    if (st) {
      // Not a directory: `dir` itself is tried (mkdir says EEXIST); higher up, the level under it says ENOTDIR.
      if (!st.isDirectory() && at === target) missing.unshift(at);
      break;
    }
    missing.unshift(at);
  }
  for (const level of missing) {
    try {
      await mkdir(level);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && (await stat(level).catch(() => undefined))?.isDirectory()) {
        if (options.durable) await syncDir(dirname(level));
        continue;
      }
      if (code !== 'ENOENT') throw err;
      const message = `cannot create directory ${level}: mkdir says ENOENT although ${dirname(level)} is there (a place that takes no new directories, such as /proc, or one removed meanwhile)`;
      throw new CairnError('UNAVAILABLE', message, { driver: options.driver, cause: err, details: { file: level } });
    }
    if (options.durable) await syncDir(dirname(level));
  }
}
