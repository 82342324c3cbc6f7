import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileSystemClock, type StampClock } from '@cairn/core';
import { isUuid, type Layout } from './layout.js';
import { exists, ORPHAN_AGE_MS, unchangedFor } from './leftover-age.js';

/**
 * Removes what a createVolume killed midway (SIGKILL, a crash, a power cut) between creating its
 * image and writing its sidecar left in `volumes/`: an image `<id>.img` with neither a sidecar
 * `<id>.json` nor a deletion marker `<id>.deleting` (that one is finished by finishDeletions,
 * deletion.ts), unchanged for more than `ageMs` by the timestamp clock of its file system
 * (unchangedFor, leftover-age.ts). A create under way elsewhere has an image changed seconds ago
 * at most (created, sized, then its sidecar written), and one being put in place by a copy that
 * keeps times has a fresh ctime: both are young. A failed (not killed) create removes its own image
 * (SidecarStore.discardCreated). Best effort: never rejects; resolves to the paths it removed.
 */
export async function sweepOrphanVolumes(layout: Layout, ageMs = ORPHAN_AGE_MS, clock: StampClock = fileSystemClock): Promise<string[]> {
  const dir = layout.dir('volume');
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  let now: bigint | undefined;
  for (const name of names) {
    const m = /^(.+)\.img$/.exec(name);
    if (!m || !isUuid(m[1]!)) continue;
    const path = join(dir, name);
    try {
      now ??= await clock.now(dir); // read once, and only when there is something to judge
      if (!(await unchangedFor(path, now, ageMs))) continue;
      if ((await exists(layout.sidecar('volume', m[1]!))) || (await exists(layout.deleting('volume', m[1]!)))) continue;
      await rm(path, { force: true });
      removed.push(path);
    } catch {
      // gone meanwhile, not ours to remove, or the clock unreadable: the next sweep looks again
    }
  }
  return removed;
}
