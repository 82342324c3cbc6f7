import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { StampClock } from '@cairn/core';

/**
 * Age after which a file that no sidecar names (a killed create's image copy or image, a killed
 * atomic write's temp file) is taken for a leftover: one day. A live create writes its image and
 * then, within seconds, its sidecar; an atomic write renames its temp file within milliseconds.
 * Only a process stalled for a day (a hung NFS mount) could still be about to use a file this old.
 */
export const ORPHAN_AGE_MS = 24 * 60 * 60 * 1000;

/**
 * Whether the entry at `path` has been unchanged for more than `ageMs` at `now`, a reading of the
 * timestamp clock of the file system holding it (core's StampClock.now), never the local clock:
 * its age is from the later of its mtime and ctime, so an entry just put in place by a copy that
 * keeps times (`cp -a`, `rsync -a`, `tar x`) is young (its ctime is fresh, and no utimes sets it
 * back), and a file server whose clock is behind this host's never makes a live file look old.
 * Throws what lstat(2) throws (ENOENT: gone meanwhile).
 */
export async function unchangedFor(path: string, now: bigint, ageMs: number): Promise<boolean> {
  const st = await lstat(path, { bigint: true });
  const changed = st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs;
  return changed <= now - BigInt(ageMs) * 1_000_000n;
}

/** Whether anything is at `path`; an lstat failing otherwise than ENOENT counts as there (keep the data). */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    return (err as { code?: string }).code !== 'ENOENT';
  }
}

/**
 * What a sweep's judge says of an entry that may be a leftover: `unnamed` tells, once the entry is
 * old, whether nothing names it still (its sidecar absent, …); `tree`: a directory, removed with
 * what it holds (otherwise only a file is removed).
 */
export interface Leftover {
  unnamed(): Promise<boolean>;
  tree?: boolean;
}

/**
 * Removes the entries of `dir` that `judge` takes for leftovers (undefined: not one), once unchanged
 * for more than `ageMs` by `clock` (unchangedFor) and still unnamed. Reads the directory once, and
 * the clock at most once (only when there is something to judge). Best effort: never rejects (an
 * entry gone meanwhile, not ours to remove, or a clock that cannot be read is left to the next
 * sweep); resolves to the paths it removed.
 */
export async function sweepLeftovers(dir: string, judge: (name: string) => Leftover | undefined, ageMs: number, clock: StampClock): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  let now: bigint | undefined;
  for (const name of names) {
    const leftover = judge(name);
    if (!leftover) continue;
    const path = join(dir, name);
    try {
      now ??= await clock.now(dir);
      if (!(await unchangedFor(path, now, ageMs))) continue; // a live writer's, one being put in place, or too recent to tell
      if (!(await leftover.unnamed())) continue;
      await rm(path, { recursive: leftover.tree === true, force: true });
      removed.push(path);
    } catch {
      // gone meanwhile, not ours to remove, or the clock unreadable (a read-only directory): the next sweep looks again
    }
  }
  return removed;
}
