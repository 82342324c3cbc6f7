import { isUuid, type Layout } from './layout.js';
import { exists, type Leftover } from './leftover-age.js';

export { ORPHAN_AGE_MS } from './leftover-age.js';

/**
 * Judges, for sweepLeftovers, what a createSnapshot killed midway (a crash, SIGKILL, a power cut), or a deleteSnapshot
 * of a driver version that removed the sidecar first, left in `snapshots/`: an image copy
 * `<id>.img` or bitmap directory `<id>.cbt` whose sidecar `<id>.json` is absent, unchanged for
 * more than `ageMs`. A failed (not killed) create removes its own files (createSnapshotFiles);
 * without this, a copy — as much data as its volume holds — would take its space for ever, listed
 * nowhere. (A deleteSnapshot of this version leaves a `<id>.deleting` sidecar instead, finished by
 * the next listing: deletion.ts.) Entries whose sidecar exists (even damaged), temp files and
 * foreign names are not leftovers.
 *
 * An entry's age is from the later of its mtime and ctime, against the timestamp clock of the file
 * system holding `snapshots/` (unchangedFor, leftover-age.ts): a snapshot being put in place by a
 * copy that keeps times (its `.cbt` and `.img` land with the origin's old mtime before its sidecar
 * does) is young, as is a live creator's copy on a file server whose clock is behind this host's.
 */
export function orphanSnapshotEntry(layout: Layout): (name: string) => Leftover | undefined {
  return (name) => {
    const m = /^(.+)\.(img|cbt)$/.exec(name);
    if (!m || !isUuid(m[1]!)) return undefined;
    return { tree: true, unnamed: async () => !(await exists(layout.sidecar('snapshot', m[1]!))) };
  };
}
