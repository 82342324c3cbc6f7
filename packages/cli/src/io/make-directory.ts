import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError } from '@cairn/core';

/**
 * mkdir -p for the CLI's own directories (the state directory's `jobs`, `demo --dir`): makes the
 * absolute directory `dir` and its missing parents one level at a time; a level another process
 * makes meanwhile is taken as it is. `UNAVAILABLE` (details.file) when mkdir says a level's
 * parent is missing although it was found: a place that takes no new directories (/proc and its
 * per-process directories, a removed directory still reached through /proc/<pid>/cwd or fd), for
 * which Node's recursive mkdir retries for ever. Other system errors are thrown as they are.
 */
export async function makeDirectory(dir: string): Promise<void> {
  /** The levels to make, top first: everything below the deepest path that exists. */
  const missing: string[] = [];
  for (let at = dir; dirname(at) !== at; at = dirname(at)) {
    const found = await stat(at).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return false; // a file on the way: its mkdir says ENOTDIR
        throw err;
      },
    );
    if (found) break;
    missing.unshift(at);
  }
  for (const level of missing) {
    try {
      await mkdir(level);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && (await stat(level).catch(() => undefined))?.isDirectory()) continue;
      if (code !== 'ENOENT') throw err;
      throw new CairnError('UNAVAILABLE', `cannot create directory ${level}: mkdir says ENOENT although ${dirname(level)} is there (a place that takes no new directories, such as /proc, or one removed meanwhile)`, {
        cause: err,
        details: { file: level },
      });
    }
  }
}
