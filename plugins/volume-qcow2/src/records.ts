import { readFile } from 'node:fs/promises';
import { CairnError, type Checkpoint, type Snapshot, type Volume } from '@cairn/core';
import { isUuid } from './layout.js';

/**
 * A checkpoint as a sidecar keeps it: the dirty bitmap named `id` in the image. `consistent`
 * turns false, for good, once the bitmap (or a newer one) was lost or found inconsistent.
 */
export interface CheckpointRecord {
  id: string;
  createdAt: string;
  consistent: boolean;
}

export interface VolumeRecord {
  format: 1;
  kind: 'volume';
  id: string;
  name: string;
  size: number;
  createdAt: string;
  metadata: Record<string, string>;
  /** Oldest first; the newest consistent one's bitmap is the only one recording. */
  checkpoints: CheckpointRecord[];
}

export interface SnapshotRecord {
  format: 1;
  kind: 'snapshot';
  id: string;
  volumeId: string;
  name: string;
  size: number;
  createdAt: string;
  /** The volume's checkpoints when the copy was made; their bitmaps were copied with the data. */
  checkpoints: CheckpointRecord[];
}

/** Reads a volume sidecar. `NOT_FOUND` when absent; `CORRUPT` when unreadable or of the wrong shape. */
export async function readVolumeRecord(path: string, driver: string): Promise<VolumeRecord> {
  const r = await readJson(path, driver);
  const ok =
    r.format === 1 &&
    r.kind === 'volume' &&
    isUuid(r.id) &&
    typeof r.name === 'string' &&
    isSize(r.size) &&
    typeof r.createdAt === 'string' &&
    isStringMap(r.metadata) &&
    isCheckpoints(r.checkpoints);
  if (!ok) throw corrupt(path, driver);
  return r as unknown as VolumeRecord;
}

/** Reads a snapshot sidecar; same errors as readVolumeRecord. */
export async function readSnapshotRecord(path: string, driver: string): Promise<SnapshotRecord> {
  const r = await readJson(path, driver);
  const ok =
    r.format === 1 &&
    r.kind === 'snapshot' &&
    isUuid(r.id) &&
    isUuid(r.volumeId) &&
    typeof r.name === 'string' &&
    isSize(r.size) &&
    typeof r.createdAt === 'string' &&
    isCheckpoints(r.checkpoints);
  if (!ok) throw corrupt(path, driver);
  return r as unknown as SnapshotRecord;
}

async function readJson(path: string, driver: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') throw new CairnError('NOT_FOUND', `${path} not found`, { driver, cause: err });
    throw err;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch (err) {
    throw corrupt(path, driver, err);
  }
  throw corrupt(path, driver);
}

const corrupt = (path: string, driver: string, cause?: unknown) => new CairnError('CORRUPT', `sidecar ${path} is not a valid record`, { driver, cause });

const isSize = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0 && v % 512 === 0;

const isStringMap = (v: unknown): boolean => !!v && typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');

const isCheckpoints = (v: unknown): boolean =>
  Array.isArray(v) &&
  v.every((c: unknown) => {
    const r = c as Record<string, unknown> | null;
    return !!r && isUuid(r.id) && typeof r.createdAt === 'string' && typeof r.consistent === 'boolean';
  });

/** The contract's view of a volume record. */
export const toVolume = (r: VolumeRecord, status: Volume['status']): Volume => ({
  id: r.id,
  name: r.name,
  size: r.size,
  status,
  createdAt: r.createdAt,
  metadata: { ...r.metadata },
});

/** The contract's view of a snapshot record. */
export const toSnapshot = (r: Pick<SnapshotRecord, 'id' | 'volumeId' | 'name' | 'size' | 'createdAt'>): Snapshot => ({
  id: r.id,
  volumeId: r.volumeId,
  name: r.name,
  size: r.size,
  createdAt: r.createdAt,
});

export const toCheckpoint = (volumeId: string, c: CheckpointRecord): Checkpoint => ({ id: c.id, volumeId, createdAt: c.createdAt });

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
