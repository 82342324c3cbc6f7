import { readFile } from 'node:fs/promises';
import { CairnError, type Snapshot, type Volume } from '@cairn/core';
import { writeFileAtomic } from './atomic-file.js';
import { isUuid } from './layout.js';

/** A checkpoint as the sidecar keeps it. `consistent: false` once its bitmap may have missed a write. */
export interface CheckpointRecord {
  id: string;
  createdAt: string;
  consistent: boolean;
}

/** Set while a read-write attachment may have unsaved dirty bits; cleared by a clean detach. */
export interface WriterMark {
  pid: number;
  hostname: string;
  since: string;
}

export interface VolumeRecord {
  format: 1;
  kind: 'volume';
  id: string;
  name: string;
  size: number;
  createdAt: string;
  metadata: Record<string, string>;
  /** Oldest first. */
  checkpoints: CheckpointRecord[];
  writer: WriterMark | null;
}

export interface SnapshotRecord {
  format: 1;
  kind: 'snapshot';
  id: string;
  volumeId: string;
  name: string;
  size: number;
  createdAt: string;
  /** The volume's checkpoints when the snapshot was taken, with their bitmaps copied. */
  checkpoints: CheckpointRecord[];
}

/** Writes a sidecar atomically and durably (see writeFileAtomic). */
export async function writeRecord(path: string, record: VolumeRecord | SnapshotRecord): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`);
}

/** Reads a sidecar. `NOT_FOUND` when absent; `CORRUPT` when unreadable JSON or of the wrong shape. */
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
    isCheckpoints(r.checkpoints) &&
    (r.writer === null || isWriter(r.writer));
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

const corrupt = (path: string, driver: string, cause?: unknown) =>
  new CairnError('CORRUPT', `sidecar ${path} is not a valid record`, { driver, cause });

const isSize = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0 && v % 512 === 0;

const isStringMap = (v: unknown): boolean =>
  !!v && typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');

const isCheckpoints = (v: unknown): boolean =>
  Array.isArray(v) &&
  v.every((c: unknown) => {
    const r = c as Record<string, unknown> | null;
    return !!r && isUuid(r.id) && typeof r.createdAt === 'string' && typeof r.consistent === 'boolean';
  });

const isWriter = (v: unknown): boolean => {
  const r = v as Record<string, unknown> | null;
  return !!r && typeof r === 'object' && typeof r.pid === 'number' && typeof r.hostname === 'string' && typeof r.since === 'string';
};

/** The contract's view of a volume record. */
export function toVolume(r: VolumeRecord, status: Volume['status']): Volume {
  return { id: r.id, name: r.name, size: r.size, status, createdAt: r.createdAt, metadata: { ...r.metadata } };
}

/** The contract's view of a snapshot record. */
export function toSnapshot(r: SnapshotRecord): Snapshot {
  return { id: r.id, volumeId: r.volumeId, name: r.name, size: r.size, createdAt: r.createdAt };
}
