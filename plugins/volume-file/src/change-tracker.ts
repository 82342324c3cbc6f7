import { rm } from 'node:fs/promises';
import { writeFileAtomic, type Extent } from '@cairn/core';
import { OWNED } from './dir-owner.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { namingFullDisk } from './no-space.js';
import { WriteGate } from './write-gate.js';

/**
 * The dirty bitmaps of one volume while it is attached read-write in this process: every write
 * and writeZeroes marks all of them before touching the image; `save` persists them. The volume's
 * sidecar carries a writer mark for as long as a tracker lives, so bits lost to a crash make the
 * checkpoints inconsistent instead of wrong.
 */
export class ChangeTracker {
  readonly gate = new WriteGate();
  private readonly bitmaps = new Map<string, DirtyBitmap>();

  constructor(
    /** The driver's name, for errors. */
    private readonly driver: string,
    private readonly bitmapPath: (checkpointId: string) => string,
    /** Makes the directory the bitmaps go in where missing (DriverContext.makeCbtDir). */
    private readonly makeCbtDir: () => Promise<void>,
    /**
     * Runs `fn` with the checkpoint ids the volume's sidecar names, holding the metadata lock
     * (RecordStore.exclusively) until it returns; deleteCheckpoint drops a checkpoint from the
     * sidecar under that lock too.
     */
    private readonly named: (fn: (ids: ReadonlySet<string>) => Promise<void>) => Promise<void>,
  ) {}

  add(checkpointId: string, bitmap: DirtyBitmap): void {
    this.bitmaps.set(checkpointId, bitmap);
  }

  remove(checkpointId: string): void {
    this.bitmaps.delete(checkpointId);
  }

  has(checkpointId: string): boolean {
    return this.bitmaps.has(checkpointId);
  }

  mark(offset: number, length: number): void {
    for (const b of this.bitmaps.values()) b.mark(offset, length);
  }

  /** Changed extents since `checkpointId`, or undefined when this tracker does not track it. */
  changedSince(checkpointId: string): Extent[] | undefined {
    return this.bitmaps.get(checkpointId)?.extents();
  }

  /** Copies of every bitmap, for a snapshot taken now. */
  snapshot(): Map<string, DirtyBitmap> {
    return new Map([...this.bitmaps].map(([id, b]) => [id, b.clone()]));
  }

  /**
   * Writes every bitmap whose checkpoint the sidecar still names, atomically and durably, and
   * stops tracking the others (deleted by another driver instance or process): a deleted
   * checkpoint's bitmap file is never written back. A bitmap the full file system refuses fails it
   * `UNAVAILABLE` naming that file (no-space.ts); the file keeps its old content.
   */
  async save(): Promise<void> {
    await this.makeCbtDir();
    await this.named(async (ids) => {
      for (const [id, b] of [...this.bitmaps]) {
        if (!ids.has(id)) this.bitmaps.delete(id);
        else {
          const path = this.bitmapPath(id);
          await namingFullDisk(path, 'saving dirty bitmap', this.driver, () => writeFileAtomic(path, b.serialize(), OWNED)); // keeps the directory's owner
        }
      }
    });
  }
}

/**
 * Drops a bitmap file — or whatever damaged entry took its place, a directory included (the path
 * is always `<id>.cbt/<checkpoint uuid>.bitmap`, never a caller's); a missing one is not an error.
 * Idempotent.
 */
export async function removeBitmap(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
}
