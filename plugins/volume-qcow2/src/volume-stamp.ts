import { sameStamp, settledStampOf, stampOf, type ImageStamp } from '@cairn/core';
import type { RecordKind } from './layout.js';
import type { RecordStore } from './record-store.js';

/*
 * Image stamps (`@cairn/core` image-stamp: inode, size, nanosecond mtime and ctime) of volume
 * images, against writes made while the driver has the image closed. qemu programs that open
 * the image writable mark what they write in its enabled persistent bitmap, but a plain write to
 * the file (a data cluster overwritten in place) changes no bitmap, and the checkpoint would
 * under-report. Contract:
 * - saveVolumeStamp runs right after this driver's daemon closed the volume's node (its last
 *   write to the image: the bitmaps), under the image's hold taken after the close (holdImage,
 *   Runtime), so that no other instance changes the sidecar meanwhile; not when the hold cannot
 *   be taken, nor when the daemon died by the time of the write, nor for a node whose stamp check
 *   failed at its open (the mismatch it could not record stays visible: the old stamp no longer
 *   matches); nor for a node still open at a `quit`, even one that exited cleanly with its bitmaps
 *   stored: from the exit on nothing holds the image (and no hold can be taken before it: the
 *   daemon's open keeps other locks off), so (1) another instance may meanwhile open it, find the
 *   old stamp mismatched and mark the checkpoints not consistent, which a stamp written from a read
 *   of the sidecar made before that would undo (sidecar updates are serialized in-process only):
 *   a wrong incremental; (2) a program taking qemu's locks (`qemu-img bitmap --clear`, a VM) may
 *   change the image and be absorbed; (3) qemu exits 0 also after it failed to store a bitmap at
 *   close (it only logs it). A hold in a fresh daemon after the exit would settle (1) only;
 * - the image's stamp is taken before the daemon opens the closed image (imageStampNow), and
 *   compared once the open succeeded and before the chain is reconciled (checkVolumeStamp); a
 *   snapshot copy of a volume compares it under its hold, before copying: an image that no longer matches
 *   makes every checkpoint not consistent (NOT_FOUND since them: the next backup reads everything).
 * createVolume saves the new image's stamp with the sidecar. A sidecar without a stamp (written
 * before stamps existed) is not checked; a stamp that could not be saved leaves the older one, which no longer
 * matches: a full backup, never a wrong incremental.
 *
 * Snapshot copies (createSnapshot of a closed volume) are stamped the same way: the copy's stamp
 * (settledImageStamp) is saved with its sidecar when it is made, once `qemu-img convert` has
 * finished. The driver never writes a copy after that — an attach opens it read-only, and
 * deleteSnapshot's hold is a raw node that writes nothing — so that stamp is never saved again.
 * Each attach of the copy takes its stamp before the open and compares it once the daemon has
 * the copy open (checkCopyStamp; the open keeps writers that take qemu's locks off it, and
 * deleteSnapshot's hold of it, in any instance); a mismatch makes every checkpoint of the copy
 * not consistent in its sidecar, for good. Each "changed since" query of the attachment compares
 * the stamp again (copyStampHolds): a plain write to the copy while it is attached is seen too,
 * up to the query (not one between the query and the reads that follow it).
 */

/** The stamp to save for an image the driver just made (settledStampOf); `racy` (never matches) when it cannot be settled. */
export async function settledImageStamp(path: string): Promise<ImageStamp> {
  return settledStampOf(path).catch(async () => ({ ...(await stampOf(path)), racy: true as const }));
}

/**
 * Saves the stamp of the volume's image, taken once the file system's clock is past its ctime
 * (settledStampOf). `held` (whether the caller still holds the image: its daemon runs) is asked
 * after that wait, with the sidecar read, right before the write: false writes nothing. A hold
 * lost during the write itself is not seen. Never throws.
 */
export async function saveVolumeStamp(store: RecordStore, volumeId: string, held: () => boolean): Promise<void> {
  try {
    const stamp = await settledStampOf(store.layout.image('volume', volumeId));
    await store.updateVolume(volumeId, (r) => {
      if (!held()) throw new Error('the image is no longer held'); // nothing is written
      r.imageStamp = stamp;
    });
  } catch {
    // The old stamp stays and no longer matches the image: the next open loses the checkpoints.
  }
}

/** The stamp of a volume's image or a snapshot copy now, to hand to checkVolumeStamp or checkCopyStamp once it is held; undefined for a missing file. */
export async function imageStampNow(store: RecordStore, kind: RecordKind, id: string): Promise<ImageStamp | undefined> {
  return stampOf(store.layout.image(kind, id)).catch(() => undefined);
}

/**
 * Once this daemon holds the image (its node opened fresh, or holdImage), so that no other
 * instance changes the sidecar meanwhile: when the sidecar's stamp does not match `before` (the
 * image's stamp taken before the open; the open itself writes the image), every checkpoint is
 * marked not consistent and the stamp replaced by one that never matches (the next close saves a
 * new one). A stamp saved by
 * another instance between `before` and the open mismatches too: a full backup, never a miss.
 * Nothing happens without a saved stamp or without `before` (a missing image: the open fails).
 * Callers hold the volume's lock.
 */
export async function checkVolumeStamp(store: RecordStore, volumeId: string, before: ImageStamp | undefined): Promise<void> {
  if (!mismatched((await store.volume(volumeId)).imageStamp, before)) return;
  await store.updateVolume(volumeId, (r) => distrust(r, before!));
}

/**
 * checkVolumeStamp for a snapshot copy, once this daemon has the copy open (its attach): when
 * the sidecar's stamp does not match `before` (the copy's stamp taken before the open), every
 * checkpoint of the copy is marked not consistent and the stamp replaced by one that never
 * matches. Nothing happens without a saved stamp (older copies) or without `before`. Callers hold
 * the lock of the copy's volume.
 */
export async function checkCopyStamp(store: RecordStore, snapshotId: string, before: ImageStamp | undefined): Promise<void> {
  if (!mismatched((await store.snapshot(snapshotId)).imageStamp, before)) return;
  await store.updateSnapshot(snapshotId, (r) => distrust(r, before!));
}

/** Whether the copy at `path` still has the stamp `saved` (true without one: an older copy); false when it cannot be read. */
export async function copyStampHolds(saved: ImageStamp | undefined, path: string): Promise<boolean> {
  if (!saved) return true;
  return stampOf(path).then(
    (now) => sameStamp(saved, now),
    () => false,
  );
}

/** Whether a saved stamp is contradicted by the image's stamp `before` (neither missing). */
function mismatched(saved: ImageStamp | undefined, before: ImageStamp | undefined): boolean {
  return !!saved && !!before && !sameStamp(saved, before);
}

/** Marks every checkpoint of the sidecar `r` not consistent, and gives it a stamp that never matches. */
function distrust(r: { checkpoints: { consistent: boolean }[]; imageStamp?: ImageStamp }, before: ImageStamp): void {
  for (const c of r.checkpoints) c.consistent = false;
  // Never matches (sameStamp: `racy`). A volume: a checkpoint made from now on is not trusted
  // either until a close saves a real stamp (a crash before that leaves no gap for outside
  // writes). A copy: never saved again, so it stays distrusted.
  r.imageStamp = { ...before, racy: true };
}
