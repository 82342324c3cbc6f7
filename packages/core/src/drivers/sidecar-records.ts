import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Checkpoint, Snapshot, Volume } from '../contracts/volume-driver.js';
import { CairnError, isCairnError, toCairnError } from '../errors.js';
import { writeFileAtomic, type NewFileOptions } from '../util/durable-file.js';

/**
 * JSON sidecars for volume drivers that keep their records in files next to the images (file,
 * qcow2): the shared shapes, strict readers (`CORRUPT` for anything malformed) and atomic writes.
 * A driver adds its own fields and checks them with the `extra` validator.
 */

/** A checkpoint as a sidecar keeps it. `consistent: false`, for good, once its record of changes may have missed a write. */
export interface CheckpointRecord {
  id: string;
  createdAt: string;
  consistent: boolean;
}

export interface VolumeSidecar {
  format: 1;
  kind: 'volume';
  id: string;
  name: string;
  size: number;
  createdAt: string;
  metadata: Record<string, string>;
  /** Oldest first. */
  checkpoints: CheckpointRecord[];
}

export interface SnapshotSidecar {
  format: 1;
  kind: 'snapshot';
  id: string;
  volumeId: string;
  name: string;
  size: number;
  createdAt: string;
  /** The volume's checkpoints when the snapshot was taken. */
  checkpoints: CheckpointRecord[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** True for a lowercase UUID (the only ids sidecar drivers hand out). */
export const isUuid = (v: unknown): v is string => typeof v === 'string' && UUID.test(v);

const isSize = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0 && v % 512 === 0;
const isStringMap = (v: unknown): boolean => !!v && typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
const isCheckpoints = (v: unknown): boolean =>
  Array.isArray(v) &&
  v.every((c: unknown) => {
    const r = c as Record<string, unknown> | null;
    return !!r && isUuid(r.id) && typeof r.createdAt === 'string' && typeof r.consistent === 'boolean';
  });

const corrupt = (path: string, driver: string, cause?: unknown) => new CairnError('CORRUPT', `sidecar ${path} is not a valid record`, { driver, cause });

/** Writes a sidecar atomically and durably. Idempotent. */
export async function writeSidecar(path: string, record: VolumeSidecar | SnapshotSidecar, options: NewFileOptions = {}): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`, options);
}

/** Reads a volume sidecar. `NOT_FOUND` when absent; `CORRUPT` when damaged or of the wrong shape (see readJson). */
export async function readVolumeSidecar<T extends VolumeSidecar>(path: string, driver: string, extra: (r: Record<string, unknown>) => boolean = () => true): Promise<T> {
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
    extra(r);
  if (!ok) throw corrupt(path, driver);
  return r as unknown as T;
}

/** Reads a snapshot sidecar; same errors as readVolumeSidecar. */
export async function readSnapshotSidecar<T extends SnapshotSidecar>(path: string, driver: string, extra: (r: Record<string, unknown>) => boolean = () => true): Promise<T> {
  const r = await readJson(path, driver);
  const ok =
    r.format === 1 &&
    r.kind === 'snapshot' &&
    isUuid(r.id) &&
    isUuid(r.volumeId) &&
    typeof r.name === 'string' &&
    isSize(r.size) &&
    typeof r.createdAt === 'string' &&
    isCheckpoints(r.checkpoints) &&
    extra(r);
  if (!ok) throw corrupt(path, driver);
  return r as unknown as T;
}

/** The most a sidecar may hold: records are small; a larger file is damage, not a record. */
const MAX_SIDECAR_BYTES = 16 * 1024 * 1024;

/**
 * A sidecar's JSON object. `NOT_FOUND` when absent; `CORRUPT` for anything but a regular file of
 * at most MAX_SIDECAR_BYTES holding a JSON object: a symbolic link (sidecars are written by
 * rename, never linked), a directory, a FIFO or device (opened without blocking and refused
 * unread), bytes that are not UTF-8 JSON. Other system errors as toCairnError maps them, tagged.
 */
async function readJson(path: string, driver: string): Promise<Record<string, unknown>> {
  let bytes: Buffer;
  try {
    const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile() || st.size > MAX_SIDECAR_BYTES) throw corrupt(path, driver);
      bytes = await fh.readFile();
    } finally {
      await fh.close().catch(() => {});
    }
  } catch (err) {
    if (isCairnError(err)) throw err;
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT') throw new CairnError('NOT_FOUND', `${path} not found`, { driver, cause: err });
    if (code === 'ELOOP' || code === 'EISDIR' || code === 'ENXIO') throw corrupt(path, driver, err);
    throw toCairnError(err, driver, `sidecar ${path}`);
  }
  try {
    const parsed: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch (err) {
    throw corrupt(path, driver, err);
  }
  throw corrupt(path, driver);
}

/** The contract's view of a volume sidecar. */
export const toVolume = (r: VolumeSidecar, status: Volume['status']): Volume => ({
  id: r.id,
  name: r.name,
  size: r.size,
  status,
  createdAt: r.createdAt,
  metadata: { ...r.metadata },
});

/** The contract's view of a snapshot sidecar. */
export const toSnapshot = (r: Pick<SnapshotSidecar, 'id' | 'volumeId' | 'name' | 'size' | 'createdAt'>): Snapshot => ({
  id: r.id,
  volumeId: r.volumeId,
  name: r.name,
  size: r.size,
  createdAt: r.createdAt,
});

/** The contract's view of a checkpoint record. */
export const toCheckpoint = (volumeId: string, c: CheckpointRecord): Checkpoint => ({ id: c.id, volumeId, createdAt: c.createdAt });
