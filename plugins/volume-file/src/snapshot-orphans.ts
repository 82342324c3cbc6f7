import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileSystemClock, type StampClock } from '@cairn/core';
import { isUuid, type Layout } from './layout.js';

/**
 * Age after which a snapshot's image copy or bitmap directory with no sidecar is taken for a
 * leftover: one day. A live createSnapshot writes its copy (fresh mtime) and then, within
 * seconds, its bitmaps and sidecar; only a creator stalled for a day (a hung NFS mount) could
 * still be about to write the sidecar of a copy this old.
 */
export const ORPHAN_AGE_MS = 24 * 60 * 60 * 1000;

/**
 * Removes what a createSnapshot killed midway (a crash, SIGKILL, a power cut), or a deleteSnapshot
 * of a driver version that removed the sidecar first, left in `snapshots/`: an image copy
 * `<id>.img` or bitmap directory `<id>.cbt` whose sidecar `<id>.json` is absent, unchanged for
 * more than `ageMs`. A failed (not killed) create removes its own files (createSnapshotFiles);
 * without this, a copy — as much data as its volume holds — would take its space for ever, listed
 * nowhere. (A deleteSnapshot of this version leaves a `<id>.deleting` sidecar instead, finished by
 * the next listing: deletion.ts.) Entries whose sidecar exists (even damaged), temp files and
 * foreign names are left alone. Best effort: never rejects; resolves to the paths it removed.
 *
 * An entry's age is from the later of its mtime and ctime, against the timestamp clock of the file
 * system holding `snapshots/` (`clock.now`), never the local clock: a snapshot being put in place
 * by a copy that keeps times (`cp -a`, `rsync -a`, `tar x`: its `.cbt` and `.img` land with the
 * origin's old mtime before its sidecar does) has a fresh ctime, which no utimes can set back; and
 * a file server whose clock is behind this host's never makes a live creator's copy look old.
 */
export async function sweepOrphanSnapshots(layout: Layout, ageMs = ORPHAN_AGE_MS, clock: StampClock = fileSystemClock): Promise<string[]> {
  const dir = layout.dir('snapshot');
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  let now: bigint | undefined;
  for (const name of names) {
    const m = /^(.+)\.(img|cbt)$/.exec(name);
    if (!m || !isUuid(m[1]!)) continue;
    const path = join(dir, name);
    try {
      now ??= await clock.now(dir); // read once, and only when there is something to judge
      const st = await lstat(path, { bigint: true });
      const changed = st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs;
      if (changed > now - BigInt(ageMs) * 1_000_000n) continue; // a live creator's, one being put in place, or too recent to tell
      if (await exists(layout.sidecar('snapshot', m[1]!))) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // gone meanwhile, not ours to remove, or the clock unreadable (a read-only directory): the next sweep looks again
    }
  }
  return removed;
}

/** Whether anything is at `path`; an lstat failing otherwise than ENOENT counts as there (keep the data). */
async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    return (err as { code?: string }).code !== 'ENOENT';
  }
}
