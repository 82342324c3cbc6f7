import { join } from 'node:path';

/**
 * Where things live under the driver's `directory`:
 *
 *   volumes/<id>.json     volume sidecar (VolumeRecord); its presence makes the volume exist
 *   volumes/<id>.qcow2    the volume image (64 KiB clusters); persistent dirty bitmaps inside
 *   snapshots/<id>.json   snapshot sidecar (SnapshotRecord)
 *   snapshots/<id>.qcow2  a sparse copy of the volume image with its bitmaps (`qemu-img convert --bitmaps`)
 *   views/<instance>/     one driver instance's views (see views-dir.ts), with owner.json naming its process
 *   views/<instance>/<id>.qcow2  temporary fleecing overlay of a point-in-time view; removed with the view
 *   views/<id>.qcow2      an overlay of the older flat layout: removed by a daemon start once stale and unheld (views-dir.ts)
 */
export type RecordKind = 'volume' | 'snapshot';

export class Layout {
  /** `instance`: this driver instance's id (names its views directory). */
  constructor(
    readonly directory: string,
    readonly instance: string,
  ) {}

  dir(kind: RecordKind): string {
    return join(this.directory, kind === 'volume' ? 'volumes' : 'snapshots');
  }

  /** Holds every instance's views directory. */
  get viewsRoot(): string {
    return join(this.directory, 'views');
  }

  /** This instance's views directory: only its own overlays are there. */
  get viewsDir(): string {
    return join(this.viewsRoot, this.instance);
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
