import { dirname } from 'node:path';
import { fileSystemClock, type StampClock } from './stamp-clock.js';

/**
 * What the driver last saw of a volume's image when nothing of its own was writing it: inode,
 * size and the nanosecond mtime and ctime (decimal strings, as JSON cannot hold them exactly).
 * Any write through another descriptor (`dd`, `qemu-img`, a VM given the raw file) changes mtime
 * and ctime, and putting mtime back (utimes) changes ctime; replacing the file changes the inode.
 * A write made in the same tick of the file system's timestamp clock as the stamp would leave
 * them unchanged ("racy git"): settledStampOf takes stamps no later write can leave unchanged.
 * A stamp marked `racy` (the clock never moved past the image's ctime) matches nothing.
 */
export interface ImageStamp {
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
  racy?: true;
}

/** The stamp of the image at `path` now, to compare with a saved one. Throws what stat(2) throws (ENOENT for a missing image). */
export async function stampOf(path: string, clock: StampClock = fileSystemClock): Promise<ImageStamp> {
  return clock.stat(path);
}

/** Clock readings settledStampOf makes before it gives up: about 3.4 s of pauses (fileSystemClock.pause). */
const SETTLE_ATTEMPTS = 60;

/**
 * The stamp of the image at `path`, to save: taken once the file system's timestamp clock is past
 * the image's ctime, so that any later change to the image gives it a greater ctime and never
 * matches (as long as the system clock is not set back). Each round is a probe update and two
 * stats; with multigrain timestamps it takes one or two rounds (the second at once), with coarse
 * timestamps up to one tick of waiting.
 * A ctime beyond the clock's current tick (the clock was set back below it) is first brought
 * back under the clock by a `touch` of the image (its ctime alone changes; once per call).
 * Should the clock still not get past the ctime within the patience (the touch refused: another
 * user's image, a read-only file system), the stamp comes back `racy`: it never matches, so every checkpoint is
 * made inconsistent at the next check (one full backup instead of a possibly wrong incremental).
 * The caller keeps the driver's own writers off the image meanwhile.
 */
export async function settledStampOf(path: string, clock: StampClock = fileSystemClock): Promise<ImageStamp> {
  const dir = dirname(path);
  let touched = false;
  for (let attempt = 0; ; attempt++) {
    const now = await clock.now(dir); // read before the stat: ctime < now means the stat saw it before the clock moved on
    const stamp = await clock.stat(path);
    const ctime = BigInt(stamp.ctimeNs);
    if (ctime < now) return stamp;
    if (ctime > now && !touched) {
      // Beyond the clock's current tick: the clock was set back below the image's ctime, and
      // would not pass it before the wall clock caught up again (hours, or years after a wrong
      // RTC). The image gets a ctime from the clock as it is now (nothing else changes), which the
      // next reading passes; the stamp about to be saved is of this image as it is now all the same.
      touched = true;
      if (await clock.touch(path).then(() => true, () => false)) continue;
    }
    if (attempt + 1 >= SETTLE_ATTEMPTS) return { ...stamp, racy: true };
    await clock.pause(attempt);
  }
}

/** Whether `saved` still describes the image whose stamp is `now`: never for a racy saved stamp. */
export function sameStamp(saved: ImageStamp, now: ImageStamp): boolean {
  return !saved.racy && saved.ino === now.ino && saved.size === now.size && saved.mtimeNs === now.mtimeNs && saved.ctimeNs === now.ctimeNs;
}

/** Shape check for a stamp read back from a sidecar. */
export function isImageStamp(v: unknown): v is ImageStamp {
  const r = v as Record<string, unknown> | null;
  return (
    !!r &&
    typeof r === 'object' &&
    (['ino', 'size', 'mtimeNs', 'ctimeNs'] as const).every((k) => typeof r[k] === 'string' && /^\d+$/.test(r[k] as string)) &&
    (r.racy === undefined || r.racy === true)
  );
}
