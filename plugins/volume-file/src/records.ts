import { isImageStamp, readSnapshotSidecar, readVolumeSidecar, type ImageStamp, type SnapshotSidecar, type VolumeSidecar } from '@cairn/core';

export { toSnapshot, toVolume, type CheckpointRecord } from '@cairn/core';

/** Set while a read-write attachment may have unsaved dirty bits; cleared by a clean detach. */
export interface WriterMark {
  pid: number;
  hostname: string;
  since: string;
}

/** A volume sidecar (core's shape) plus the writer mark that detects a crash while attached rw. */
export interface VolumeRecord extends VolumeSidecar {
  writer: WriterMark | null;
  /**
   * The image as the driver left it when it last changed it with no writer session open (a
   * checkpoint made, a clean detach, an extend). An image that no longer matches was written
   * behind the driver's back: every checkpoint becomes inconsistent (DriverContext.recover).
   * Absent in sidecars written before it existed: then nothing is compared.
   */
  imageStamp?: ImageStamp;
}

/** A snapshot sidecar; its checkpoints' bitmaps were copied with it. */
export type SnapshotRecord = SnapshotSidecar;

const isWriter = (v: unknown): boolean => {
  const r = v as Record<string, unknown> | null;
  return !!r && typeof r === 'object' && typeof r.pid === 'number' && typeof r.hostname === 'string' && typeof r.since === 'string';
};

/** Reads a volume sidecar. `NOT_FOUND` when absent; `CORRUPT` when unreadable JSON or of the wrong shape. */
export const readVolumeRecord = (path: string, driver: string): Promise<VolumeRecord> =>
  readVolumeSidecar<VolumeRecord>(path, driver, (r) => (r.writer === null || isWriter(r.writer)) && (r.imageStamp === undefined || isImageStamp(r.imageStamp)));

/** Reads a snapshot sidecar; same errors as readVolumeRecord. */
export const readSnapshotRecord = (path: string, driver: string): Promise<SnapshotRecord> => readSnapshotSidecar<SnapshotRecord>(path, driver);
