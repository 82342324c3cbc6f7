import { readFile } from 'node:fs/promises';
import { CairnError, KeyedMutex, makeDirectories } from '@cairn/core';
import { writeFileAtomic } from '@cairn/core';
import type { ChangeTracker } from './change-tracker.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { GRANULARITY } from './file-block-device.js';
import { ImageLocks } from './image-locks.js';
import type { RecordKind } from './layout.js';
import type { VolumeRecord } from './records.js';
import { RecordStore } from './record-store.js';

/** State one driver instance shares between its volume, snapshot and checkpoint code. */
export class DriverContext {
  readonly store: RecordStore;
  readonly locks: ImageLocks;
  /** Serializes attach, detach, delete, extend, snapshot and checkpoint calls per target. */
  readonly targets = new KeyedMutex();
  /** Volume id → the change tracker of its read-write attachment in this instance. */
  readonly trackers = new Map<string, ChangeTracker>();

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
   * Crash recovery for a volume whose sidecar still carries a writer mark although the caller
   * holds a lock that no live writer could share: that writer died with dirty bits unsaved, so
   * every checkpoint becomes inconsistent. Edits `r` in place; true when it changed anything.
   */
  recover(r: VolumeRecord): boolean {
    if (!r.writer || this.trackers.has(r.id)) return false;
    for (const c of r.checkpoints) c.consistent = false;
    r.writer = null;
    return true;
  }

  /** Reads the volume's sidecar and applies `recover`, persisting it when needed. Caller holds an image lock. */
  async recovered(volumeId: string): Promise<VolumeRecord> {
    const r = await this.store.volume(volumeId);
    if (!r.writer || this.trackers.has(volumeId)) return r;
    return this.store.updateVolume(volumeId, (fresh) => {
      this.recover(fresh);
      return fresh;
    });
  }

  /** A checkpoint's saved bitmap; undefined when missing or damaged (the checkpoint is then inconsistent). */
  async loadBitmap(kind: RecordKind, id: string, checkpointId: string, size: number): Promise<DirtyBitmap | undefined> {
    try {
      return DirtyBitmap.parse(await readFile(this.store.layout.bitmap(kind, id, checkpointId)), size, GRANULARITY);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * Makes the `<id>.cbt` directory of a volume or snapshot where missing (and the directories
   * above it): core's makeDirectories, so a directory that takes no new entries is `UNAVAILABLE`
   * at once, tagged with this driver. Idempotent.
   */
  async makeCbtDir(kind: RecordKind, id: string): Promise<void> {
    await makeDirectories(this.store.layout.cbtDir(kind, id), { driver: this.name });
  }

  async saveBitmap(kind: RecordKind, id: string, checkpointId: string, bitmap: DirtyBitmap): Promise<void> {
    await this.makeCbtDir(kind, id);
    await writeFileAtomic(this.store.layout.bitmap(kind, id, checkpointId), bitmap.serialize());
  }
}
