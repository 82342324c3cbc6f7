import { join } from 'node:path';

/**
 * Where things live under the driver's `directory`:
 *
 *   .lock                                  flock(2) serializing metadata changes across processes
 *   volumes/<id>.json                      volume sidecar (VolumeRecord); its presence makes the volume exist
 *   volumes/<id>.img                       raw image, sparse, exactly `size` bytes
 *   volumes/<id>.cbt/<checkpoint>.bitmap   dirty bitmap of one checkpoint
 *   volumes/<id>.writer                    empty; flock(2) held by a read-write attachment (writer-lock.ts)
 *   volumes/<id>.deleting                  the sidecar of a volume being deleted, renamed (deletion.ts)
 *   volumes/.clock                         empty probe whose ctime reads the file system's clock (core's drivers/stamp-clock.ts)
 *   snapshots/<id>.json|.img|.cbt/         the same for snapshots (SnapshotRecord)
 *   snapshots/<id>.deleting                the same for a snapshot being deleted
 *   snapshots/.clock                       the same probe, read by the sweep of leftover snapshot files (snapshot-orphans.ts)
 */
export type RecordKind = 'volume' | 'snapshot';

export class Layout {
  constructor(readonly directory: string) {}

  get lockFile(): string {
    return join(this.directory, '.lock');
  }

  dir(kind: RecordKind): string {
    return join(this.directory, kind === 'volume' ? 'volumes' : 'snapshots');
  }

  sidecar(kind: RecordKind, id: string): string {
    return join(this.dir(kind), `${id}.json`);
  }

  image(kind: RecordKind, id: string): string {
    return join(this.dir(kind), `${id}.img`);
  }

  /** The writer lock of volume `id` (writer-lock.ts); made at its first read-write attach. */
  writerLock(id: string): string {
    return join(this.dir('volume'), `${id}.writer`);
  }

  /** The sidecar of `kind` `id` once its deletion has begun (deletion.ts): no longer a volume or snapshot. */
  deleting(kind: RecordKind, id: string): string {
    return join(this.dir(kind), `${id}.deleting`);
  }

  cbtDir(kind: RecordKind, id: string): string {
    return join(this.dir(kind), `${id}.cbt`);
  }

  bitmap(kind: RecordKind, id: string, checkpointId: string): string {
    return join(this.cbtDir(kind, id), `${checkpointId}.bitmap`);
  }
}

/** Ids are UUIDs; anything else cannot name a file of ours (and is never found). */
export { isUuid } from '@cairn/core';
