import { rm, stat } from 'node:fs/promises';
import { makeDirectories, SidecarStore } from '@cairn/core';
import { Layout, type RecordKind } from './layout.js';
import { readSnapshotRecord, readVolumeRecord, type SnapshotRecord, type VolumeRecord } from './records.js';

/**
 * The driver's sidecars (core's SidecarStore) plus its layout. Read-modify-writes are serialized
 * in-process only: one driver instance owns a directory, and its daemon holds the images' locks.
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
   * Undoes a create that failed (createVolume, a snapshot copy), whatever step failed: all or
   * nothing. The sidecar goes first, as in a deletion — it may be in place although its write
   * failed (renamed, then the directory fsync failed) — and the image only once no sidecar names
   * it. So the failed create leaves nothing listed, or at worst, when the sidecar cannot be
   * removed, a listed volume or snapshot whose image is still there, written in full before the
   * sidecar was: it attaches, and deletes as any other. Never throws: the caller raises the
   * create's own error.
   */
  async discardCreated(kind: RecordKind, id: string): Promise<void> {
    await this.remove(kind, id).catch(() => {});
    const named = await stat(this.layout.sidecar(kind, id)).then(
      () => true,
      (err: { code?: string }) => err.code !== 'ENOENT', // cannot tell: keep the image
    );
    if (!named) await rm(this.layout.image(kind, id), { force: true }).catch(() => {});
  }
}
