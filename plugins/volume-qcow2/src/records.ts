import { readSnapshotSidecar, readVolumeSidecar, type CheckpointRecord, type SnapshotSidecar, type VolumeSidecar } from '@cairn/core';

export { toCheckpoint, toSnapshot, toVolume, type CheckpointRecord } from '@cairn/core';

/**
 * A volume sidecar (core's shape). Each checkpoint is the dirty bitmap named by its id inside the
 * image; the newest consistent one is the only one recording.
 */
export type VolumeRecord = VolumeSidecar;

/** A snapshot copy's sidecar; the volume's checkpoints' bitmaps were copied with the data. */
export type SnapshotRecord = SnapshotSidecar;

/** Reads a volume sidecar. `NOT_FOUND` when absent; `CORRUPT` when unreadable or of the wrong shape. */
export const readVolumeRecord = (path: string, driver: string): Promise<VolumeRecord> => readVolumeSidecar<VolumeRecord>(path, driver);

/** Reads a snapshot sidecar; same errors as readVolumeRecord. */
export const readSnapshotRecord = (path: string, driver: string): Promise<SnapshotRecord> => readSnapshotSidecar<SnapshotRecord>(path, driver);

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
