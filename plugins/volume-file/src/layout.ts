import { join } from 'node:path';
import { isUuid } from '@cairn/core';

/**
 * Where things live under the driver's `directory`:
 *
 *   .lock                                  flock(2) serializing metadata changes across processes
 *   volumes/<id>.json                      volume sidecar (VolumeRecord); its presence makes the volume exist
 *   volumes/<id>.img                       raw image, sparse, exactly `size` bytes
 *   volumes/<id>.cbt/<checkpoint>.bitmap   dirty bitmap of one checkpoint
 *   volumes/<id>.writer                    empty; flock(2) held by a read-write attachment (writer-lock.ts)
 *   volumes/<id>.deleting                  the sidecar of a volume being deleted, renamed (deletion.ts)
 *   volumes/.<id>.json.<random>.tmp       a sidecar being written (core's writeFileAtomic); left by a killed write (sidecar-temps.ts)
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
export { isUuid };

/**
 * The id whose sidecar the temp file `name` (an entry of a kind's directory) was written for —
 * `.<id>.json.<random hex>.tmp`, core's tempPathBeside — or undefined for any other name.
 */
export function sidecarTempId(name: string): string | undefined {
  const m = /^\.(.+)\.json\.[0-9a-f]+\.tmp$/.exec(name);
  return m && isUuid(m[1]!) ? m[1] : undefined;
}

