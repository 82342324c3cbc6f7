import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { CairnError, fileSystemClock, KeyedMutex, readFully, sameStamp, settledStampOf, writeFileAtomic, type ImageStamp, type StampClock } from '@cairn/core';
import type { ChangeTracker } from './change-tracker.js';
import { makeOwnedDirectory, OWNED } from './dir-owner.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { GRANULARITY } from './file-block-device.js';
import { ImageLocks } from './image-locks.js';
import type { RecordKind } from './layout.js';
import { namingFullDisk } from './no-space.js';
import type { VolumeRecord } from './records.js';
import { RecordStore } from './record-store.js';

/**
 * open(2) errors meaning no bitmap file is at the path: missing (ENOENT), the `.cbt` directory
 * not a directory (ENOTDIR), a symlink loop (ELOOP), a socket or a device with no driver (ENXIO).
 */
const NO_BITMAP_THERE = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'ENXIO']);

/** State one driver instance shares between its volume, snapshot and checkpoint code. */
export class DriverContext {
  readonly store: RecordStore;
  readonly locks: ImageLocks;
  /** Serializes attach, detach, delete, extend, snapshot and checkpoint calls per target. */
  readonly targets = new KeyedMutex();
  /** Volume id → the change tracker of its read-write attachment in this instance. */
  readonly trackers = new Map<string, ChangeTracker>();
  /** What image stamps are read with; a seam for tests emulating coarse file-system timestamps. */
  clock: StampClock = fileSystemClock;

  constructor(
    readonly name: string,
    directory: string,
  ) {
    this.store = new RecordStore(directory, name);
    this.locks = new ImageLocks(name);
  }

  err(code: CairnError['code'], message: string, cause?: unknown): CairnError {
    return new CairnError(code, message, { driver: this.name, cause });
  }

  /**
   * Recovery for a volume whose checkpoints may have missed writes, called holding a lock that no
   * live writer could share (or with this instance's own writer, when it does nothing):
   * - the sidecar still carries a writer mark: that writer died with dirty bits unsaved;
   * - the image no longer matches the sidecar's `imageStamp`: something wrote it behind the
   *   driver's back (core's drivers/image-stamp.ts).
   * Either way every checkpoint becomes inconsistent, the mark is cleared and the stamp taken
   * anew (settled: settledStampOf). Edits `r` in place; true when it changed anything.
   *
   * `now`, when given, is a settled stamp of the image (imageStamp) the caller took holding that
   * same lock: it is compared and saved instead of stat and settling here, so that a caller can
   * settle before it takes the metadata lock (settling may wait one tick of a coarse clock). An
   * outside write after it has a later ctime, so it never matches: it is caught at the next check.
   */
  async recover(r: VolumeRecord, now?: ImageStamp): Promise<boolean> {
    if (!(await this.needsRecovery(r, now))) return false;
    for (const c of r.checkpoints) c.consistent = false;
    r.writer = null;
    r.imageStamp = now ?? (await this.imageStamp(r.id));
    return true;
  }

  /** Whether `recover` would change `r`: a stat of the image (unless `now` is given), no settling. */
  private async needsRecovery(r: VolumeRecord, now?: ImageStamp): Promise<boolean> {
    if (this.trackers.has(r.id)) return false;
    if (r.writer) return true;
    return !!r.imageStamp && !sameStamp(r.imageStamp, now ?? (await this.clock.stat(this.store.layout.image('volume', r.id))));
  }

  /**
   * Reads the volume's sidecar and applies `recover`, persisting it when needed. Caller holds an
   * image lock that no live writer could share. The common case (nothing to recover) costs one stat
   * and takes no metadata lock; otherwise the stamp is settled once, before the metadata lock, and
   * the sidecar read again under it is recovered with that stamp (another process may have
   * recovered it meanwhile: then nothing changes).
   */
  async recovered(volumeId: string): Promise<VolumeRecord> {
    const r = await this.store.volume(volumeId);
    if (!(await this.needsRecovery(r))) return r;
    const now = await this.imageStamp(volumeId);
    return this.store.updateVolume(volumeId, async (fresh) => {
      await this.recover(fresh, now);
      return fresh;
    });
  }

  /**
   * Whether the image still matches the stamp of `r` (true when `r` has none). For queries that
   * take no lock: a mismatch makes them treat every checkpoint as inconsistent.
   */
  async imageUnchanged(r: VolumeRecord): Promise<boolean> {
    return !r.imageStamp || sameStamp(r.imageStamp, await this.clock.stat(this.store.layout.image('volume', r.id)));
  }

  /**
   * The image of volume `volumeId` as it is now, as a stamp no later write leaves matching
   * (settledStampOf). The caller keeps this driver's writers off the image.
   */
  async imageStamp(volumeId: string): Promise<ImageStamp> {
    return settledStampOf(this.store.layout.image('volume', volumeId), this.clock);
  }

  /**
   * A checkpoint's saved bitmap for a `size`-byte volume; undefined when missing or damaged (the
   * checkpoint is then inconsistent: its queries are `NOT_FOUND`, callers read everything). Damaged
   * includes anything that is not a regular file of exactly the serialized size (a directory, a
   * FIFO, a file of the wrong length, even over 2 GiB): it is told from fstat before any byte is
   * read, and no more than that size is ever read. Errors that say nothing about the file itself
   * (EACCES, EIO, …) are thrown: they may pass, and marking the checkpoint inconsistent would not.
   */
  async loadBitmap(kind: RecordKind, id: string, checkpointId: string, size: number): Promise<DirtyBitmap | undefined> {
    const expected = DirtyBitmap.fileSize(size, GRANULARITY);
    let fh: FileHandle;
    try {
      // O_NONBLOCK: opening a FIFO found in its place must not wait for a writer (no effect on a regular file).
      fh = await open(this.store.layout.bitmap(kind, id, checkpointId), constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (err) {
      if (NO_BITMAP_THERE.has((err as { code?: string }).code ?? '')) return undefined;
      throw err;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() || st.size !== expected) return undefined;
      const buf = Buffer.alloc(expected);
      await readFully(fh, buf, 0); // a file cut short meanwhile leaves zeros (Buffer.alloc), which parse refuses
      return DirtyBitmap.parse(buf, size, GRANULARITY);
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /**
   * Makes the `<id>.cbt` directory of a volume or snapshot where missing (and the directories
   * above it): core's makeDirectories, so a directory that takes no new entries is `UNAVAILABLE`
   * at once, tagged with this driver; a new `.cbt` gets its parent's owner (makeOwnedDirectory).
   * A full file system: `UNAVAILABLE` naming the directory (no-space.ts). Idempotent.
   */
  async makeCbtDir(kind: RecordKind, id: string): Promise<void> {
    const dir = this.store.layout.cbtDir(kind, id);
    await namingFullDisk(dir, 'making directory', this.name, () => makeOwnedDirectory(dir, this.name));
  }

  /**
   * Replaces a checkpoint's bitmap atomically and durably, keeping its directory's owner
   * (writeFileAtomic with OWNED). A full file system: `UNAVAILABLE` naming the bitmap file, which
   * keeps its old content (no-space.ts).
   */
  async saveBitmap(kind: RecordKind, id: string, checkpointId: string, bitmap: DirtyBitmap): Promise<void> {
    await this.makeCbtDir(kind, id);
    const path = this.store.layout.bitmap(kind, id, checkpointId);
    await namingFullDisk(path, 'saving dirty bitmap', this.name, () => writeFileAtomic(path, bitmap.serialize(), OWNED));
  }
}
