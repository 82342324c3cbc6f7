import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileSystemClock, type StampClock } from '@cairn/core';
import { isUuid, type Layout } from './layout.js';
import { exists, ORPHAN_AGE_MS, unchangedFor } from './leftover-age.js';

export { ORPHAN_AGE_MS } from './leftover-age.js';

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
 * system holding `snapshots/` (unchangedFor, leftover-age.ts): a snapshot being put in place by a
 * copy that keeps times (its `.cbt` and `.img` land with the origin's old mtime before its sidecar
 * does) is young, as is a live creator's copy on a file server whose clock is behind this host's.
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
      if (!(await unchangedFor(path, now, ageMs))) continue; // a live creator's, one being put in place, or too recent to tell
      if (await exists(layout.sidecar('snapshot', m[1]!))) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // gone meanwhile, not ours to remove, or the clock unreadable (a read-only directory): the next sweep looks again
    }
  }
  return removed;
}
