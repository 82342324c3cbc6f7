import { makeDirectories, SidecarStore } from '@cairn/core';
import { Layout, type RecordKind } from './layout.js';
import { readSnapshotRecord, readVolumeRecord, type SnapshotRecord, type VolumeRecord } from './records.js';

/**
 * The driver's sidecars (core's SidecarStore) plus its layout. Read-modify-writes are serialized
 * in-process only. Several instances (processes) may share a directory: between them, qemu's
 * image locks, held by each instance's daemon, decide who may change a volume (README), and each
 * sidecar write is atomic.
 */
export class RecordStore extends SidecarStore<VolumeRecord, SnapshotRecord> {
  readonly layout: Layout;

  /** `instance`: this driver instance's id (Layout). */
  constructor(directory: string, driver: string, instance: string) {
    const layout = new Layout(directory, instance);
    super({
      driver,
      dir: (kind) => layout.dir(kind),
      readVolume: readVolumeRecord,
      readSnapshot: readSnapshotRecord,
      setup: () => makeDirectories(layout.viewsRoot, { driver }),
    });
    this.layout = layout;
  }

  /**
   * Read-modify-write of a snapshot copy's sidecar, as updateVolume: `fn` edits the record in
   * place; it is written back only when `fn` returns without throwing. `NOT_FOUND` for an unknown
   * snapshot. Serialized in-process by the caller, which holds the lock of the copy's volume (as
   * every write and removal of a snapshot sidecar does).
   */
  async updateSnapshot<T>(id: string, fn: (r: SnapshotRecord) => Promise<T> | T): Promise<T> {
    const record = await this.snapshot(id);
    const result = await fn(record);
    await this.put(record);
    return result;
  }

  /** The driver's name, for errors. */
  get driverName(): string {
    return this.options.driver;
  }
}
