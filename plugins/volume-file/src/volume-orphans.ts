import { isUuid, type Layout } from './layout.js';
import { exists, type Leftover } from './leftover-age.js';

/**
 * Judges, for sweepLeftovers, what a createVolume killed midway (SIGKILL, a crash, a power cut) between creating its
 * image and writing its sidecar left in `volumes/`: an image `<id>.img` with neither a sidecar
 * `<id>.json` nor a deletion marker `<id>.deleting` (that one is finished by finishDeletions,
 * deletion.ts), unchanged for more than `ageMs` by the timestamp clock of its file system
 * (unchangedFor, leftover-age.ts). A create under way elsewhere has an image changed seconds ago
 * at most (created, sized, then its sidecar written), and one being put in place by a copy that
 * keeps times has a fresh ctime: both are young. A failed (not killed) create removes its own image
 * (SidecarStore.discardCreated).
 */
export function orphanVolumeEntry(layout: Layout): (name: string) => Leftover | undefined {
  return (name) => {
    const m = /^(.+)\.img$/.exec(name);
    if (!m || !isUuid(m[1]!)) return undefined;
    const id = m[1]!;
    return { unnamed: async () => !(await exists(layout.sidecar('volume', id))) && !(await exists(layout.deleting('volume', id))) };
  };
}
