import { join } from 'node:path';

/**
 * Where things live under the driver's `directory`:
 *
 *   volumes/<id>.json     volume sidecar (VolumeRecord); its presence makes the volume exist
 *   volumes/<id>.qcow2    the volume image (64 KiB clusters); persistent dirty bitmaps inside
 *   snapshots/<id>.json   snapshot sidecar (SnapshotRecord)
 *   snapshots/<id>.qcow2  a sparse copy of the volume image with its bitmaps (`qemu-img convert --bitmaps`)
 *   views/<id>.qcow2      temporary fleecing overlay of a point-in-time view; removed with the view
 */
export type RecordKind = 'volume' | 'snapshot';

export class Layout {
  constructor(readonly directory: string) {}

  dir(kind: RecordKind): string {
    return join(this.directory, kind === 'volume' ? 'volumes' : 'snapshots');
  }

  get viewsDir(): string {
    return join(this.directory, 'views');
  }

  sidecar(kind: RecordKind, id: string): string {
    return join(this.dir(kind), `${id}.json`);
  }

  image(kind: RecordKind, id: string): string {
    return join(this.dir(kind), `${id}.qcow2`);
  }

  overlay(viewId: string): string {
    return join(this.viewsDir, `${viewId}.qcow2`);
  }
}

/** Ids are UUIDs; anything else cannot name a file of ours (and is never found). */
export { isUuid } from '@cairn/core';
