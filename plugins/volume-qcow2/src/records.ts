import { isImageStamp, readSnapshotSidecar, readVolumeSidecar, type CheckpointRecord, type ImageStamp, type SnapshotSidecar, type VolumeSidecar } from '@cairn/core';

export { toCheckpoint, toSnapshot, toVolume, type CheckpointRecord } from '@cairn/core';

/** Who has a volume attached read-write (see other-instances.ts): a driver instance, its process and host. */
export interface WriterMark {
  instance: string;
  pid: number;
  hostname: string;
  since: string;
}

/**
 * A volume sidecar (core's shape). Each checkpoint is the dirty bitmap named by its id inside the
 * image; the newest consistent one is the only one recording. `writer` is set while an instance
 * has the volume attached read-write (absent in sidecars written before it existed: none).
 */
export interface VolumeRecord extends VolumeSidecar {
  writer?: WriterMark | null;
  /**
   * The image as this driver last closed it (volume-stamp.ts): a write made to it outside the
   * driver while closed makes every checkpoint not consistent. Absent in older sidecars: not checked.
   */
  imageStamp?: ImageStamp;
}

const isWriterMark = (v: unknown): boolean => {
  const r = v as Record<string, unknown> | null;
  return !!r && typeof r === 'object' && typeof r.instance === 'string' && typeof r.pid === 'number' && typeof r.hostname === 'string' && typeof r.since === 'string';
};

/** A snapshot copy's sidecar; the volume's checkpoints' bitmaps were copied with the data. */
export interface SnapshotRecord extends SnapshotSidecar {
  /**
   * The copy as this driver made it (volume-stamp.ts): a write made to it outside the driver
   * makes every checkpoint of the copy not consistent. Absent in older sidecars: not checked.
   */
  imageStamp?: ImageStamp;
}

/** Reads a volume sidecar. `NOT_FOUND` when absent; `CORRUPT` when unreadable or of the wrong shape. */
export const readVolumeRecord = (path: string, driver: string): Promise<VolumeRecord> =>
  readVolumeSidecar<VolumeRecord>(path, driver, (r) => (r.writer === undefined || r.writer === null || isWriterMark(r.writer)) && (r.imageStamp === undefined || isImageStamp(r.imageStamp)));

/** Reads a snapshot sidecar; same errors as readVolumeRecord. */
export const readSnapshotRecord = (path: string, driver: string): Promise<SnapshotRecord> =>
  readSnapshotSidecar<SnapshotRecord>(path, driver, (r) => r.imageStamp === undefined || isImageStamp(r.imageStamp));

/**
 * The checkpoints whose bitmaps must be merged to answer "changed since `checkpointId`": it and
 * every newer one. `undefined` when it is unknown or not consistent (then the answer is NOT_FOUND).
 */
export function bitmapChain(checkpoints: CheckpointRecord[], checkpointId: string): string[] | undefined {
  const i = checkpoints.findIndex((c) => c.id === checkpointId);
  if (i < 0) return undefined;
  const chain = checkpoints.slice(i);
  return chain.every((c) => c.consistent) ? chain.map((c) => c.id) : undefined;
}
