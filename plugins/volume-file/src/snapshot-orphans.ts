import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isUuid, type Layout } from './layout.js';

/**
 * Age after which a snapshot's image copy or bitmap directory with no sidecar is taken for a
 * leftover: one day. A live createSnapshot writes its copy (fresh mtime) and then, within
 * seconds, its bitmaps and sidecar; only a creator stalled for a day (a hung NFS mount) could
 * still be about to write the sidecar of a copy this old.
 */
export const ORPHAN_AGE_MS = 24 * 60 * 60 * 1000;

/**
 * Removes what a createSnapshot or deleteSnapshot killed midway (a crash, SIGKILL, a power cut)
 * left in `snapshots/`: an image copy `<id>.img` or bitmap directory `<id>.cbt` whose sidecar
 * `<id>.json` is absent, last modified more than `ageMs` ago. A failed (not killed) create removes
 * its own files (createSnapshotFiles); without this, a copy — as much data as its volume holds —
 * would take its space for ever, listed nowhere. Entries whose sidecar exists (even damaged), temp
 * files and foreign names are left alone. Best effort: never rejects; resolves to the paths it removed.
 */
export async function sweepOrphanSnapshots(layout: Layout, ageMs = ORPHAN_AGE_MS, now = Date.now()): Promise<string[]> {
  const dir = layout.dir('snapshot');
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const m = /^(.+)\.(img|cbt)$/.exec(name);
    if (!m || !isUuid(m[1]!)) continue;
    const path = join(dir, name);
    try {
      if ((await lstat(path)).mtimeMs > now - ageMs) continue; // a live creator's, or too recent to tell
      if (await exists(layout.sidecar('snapshot', m[1]!))) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // gone meanwhile, or not ours to remove: the next sweep looks again
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
