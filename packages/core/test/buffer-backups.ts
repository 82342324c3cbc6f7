/**
 * Backups of in-memory buffers straight through a BackupService (no BackupManager, no catalog):
 * for tests of the repository's data path. Pure test scaffolding.
 */
import {
  CairnError,
  ChunkedBackupService,
  MemoryBackupService,
  MemoryObjectStore,
  type BackupJob,
  type BackupRecord,
  type BlockDevice,
  type Extent,
  type ExtentQuery,
  type ObjectStore,
  type Volume,
} from '../src/index.js';
import { FAST_KDF } from './helpers.js';

/** The chunk size of openRepo's repositories. */
export const CHUNK = 256 * 1024;

/**
 * A device over a buffer whose change tracking reports `changed` (byte ranges) since any
 * checkpoint, or fails NOT_SUPPORTED when `changed` is undefined.
 */
export class BufferDevice implements BlockDevice {
  readonly extentGranularity = 4096;
  constructor(
    readonly data: Buffer,
    readonly mode: 'ro' | 'rw' = 'ro',
    private readonly changed?: Extent[],
  ) {}
  get size(): number {
    return this.data.length;
  }
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (offset < 0 || offset + length > this.size) throw new CairnError('INVALID_INPUT', `read [${offset}, +${length}) leaves the device`);
    const out = into ? into.subarray(0, length) : Buffer.alloc(length);
    this.data.copy(out, 0, offset, offset + length);
    return out;
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    Buffer.from(data).copy(this.data, offset);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
  }
  async flush(): Promise<void> {}
  async extents(query: ExtentQuery): Promise<Extent[]> {
    if (query.kind === 'allocated') return [{ offset: 0, length: this.size }];
    if (!this.changed) throw new CairnError('NOT_SUPPORTED', 'no change tracking');
    return this.changed;
  }
  async close(): Promise<void> {}
}

/** Bytes that differ in every chunk and never repeat a chunk. */
export function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return b;
}

export const VOLUME: Volume = { id: 'vol-1', name: 'vol', size: 0, status: 'available', createdAt: new Date(0).toISOString(), metadata: {} };

/** A record of a backup of VOLUME being created (`creating`). */
export function record(id: string, size: number, parent?: BackupRecord, checkpointId?: string): BackupRecord {
  const now = new Date().toISOString();
  return {
    id,
    name: id,
    description: '',
    volumeId: VOLUME.id,
    volumeName: VOLUME.name,
    size,
    status: 'creating',
    service: 'repo',
    parentId: parent?.id,
    incremental: !!parent,
    checkpointId,
    volumeMetadata: {},
    serviceData: {},
    createdAt: now,
    updatedAt: now,
  };
}

/** A job backing up `backup` (of VOLUME), cancelled through `signal` when given. */
export function job(backup: BackupRecord, parent?: BackupRecord, signal = new AbortController().signal): BackupJob {
  return { backup, parent, volume: { ...VOLUME, size: backup.size }, signal, progress: () => undefined };
}

/** A chunked service over `store` (created with CHUNK-byte chunks and `packSize`-byte packs, 1 MiB by default), inline codec. */
export async function openRepo(store: ObjectStore = new MemoryObjectStore('mem'), packSize = 1024 * 1024): Promise<ChunkedBackupService> {
  return ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize, kdf: FAST_KDF } });
}

export type Service = ChunkedBackupService | MemoryBackupService;

/** Backs up `data` (as an incremental of `parent` when given, with `changed` as its change tracking), cancelled through `signal`. */
export async function backUp(service: Service, id: string, data: Buffer, parent?: BackupRecord, changed?: Extent[], signal?: AbortSignal): Promise<BackupRecord> {
  const b = record(id, data.length, parent, 'cp');
  const result = await service.backup(job(b, parent, signal), { device: new BufferDevice(data, 'ro', changed), changedSince: changed && parent ? 'cp' : undefined });
  return { ...b, status: 'available', serviceData: result.serviceData, stats: result.stats };
}

/** Restores `b` onto a device of its size filled with 0xee, and returns the device's bytes. */
export async function restored(service: Service, b: BackupRecord): Promise<Buffer> {
  const target = new BufferDevice(Buffer.alloc(b.size, 0xee), 'rw');
  await service.restore(b, target);
  return target.data;
}
