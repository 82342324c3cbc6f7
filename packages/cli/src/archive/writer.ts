import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { CairnError, ChunkedBackupService, isCairnError, isZero, nowIso, throwIfAborted, toCairnError, type BackupManager, type BackupRecord, type BackupService } from '@cairn/core';
import * as tar from 'tar-stream';
import { ARCHIVE_CHUNK, ARCHIVE_FORMAT, chunkName, MANIFEST_NAME, MAX_METADATA_BYTES, SUMS_NAME, VM_CONFIG_NAME, type ArchiveChunk, type ArchiveManifest } from './format.js';
import type { ArchiveProgress } from './progress.js';
import { createPartialFile } from '../io/partial-file.js';
import { StagingVolume } from './staging.js';

export interface ArchiveWriteOptions {
  progress?: ArchiveProgress;
  signal?: AbortSignal;
  /** The directory the backup is restored into before it is archived (StagingVolume.create's `parent`). Default: the system temporary directory. */
  stagingDir?: string;
  /** Make `stagingDir` (and its parents) when it is missing. Default false. */
  makeStagingDir?: boolean;
}

export interface ArchiveWriteResult {
  file: string;
  backupId: string;
  size: number;
  /** Data entries written (non-zero chunks). */
  chunks: number;
  /** Bytes of data in the archive. */
  dataBytes: number;
  /**
   * Set when the archive is in place but its directory could not be fsynced, so that it may not
   * survive a crash (Published.notDurable): the export succeeded; the caller warns of this.
   */
  notDurable?: CairnError;
}

/** The offsets (ascending, each once) of the ARCHIVE_CHUNK-aligned chunks that `extents` (ascending) touch, on a device of `size` bytes. */
function allocatedChunks(extents: { offset: number; length: number }[], size: number): number[] {
  const offsets: number[] = [];
  for (const e of extents) {
    const from = Math.floor(e.offset / ARCHIVE_CHUNK) * ARCHIVE_CHUNK;
    for (let off = from; off < Math.min(e.offset + e.length, size); off += ARCHIVE_CHUNK) if (offsets.at(-1) !== off) offsets.push(off);
  }
  return offsets;
}

/** What writeArchive takes from the stored backup rather than from its catalog record. */
interface StoredBackup {
  /** The backup's size: what the restore writes and the archive's manifest says. */
  size: number;
  vmConfig?: Buffer;
  /** The record fields that describe the data, as stored (the catalog's copy may differ). */
  dataFields: Partial<Pick<BackupRecord, 'volumeId' | 'size' | 'parentId' | 'incremental' | 'createdAt'>>;
}

/**
 * The stored backup's size, VM configuration and data fields. For a repository (a
 * ChunkedBackupService) its manifest, read once, is authoritative, as exportRecord takes it:
 * records written before 2026-12-05 kept the volume's size at request time, which may not be the
 * size the backup holds. Other services: the record's own size, no VM configuration. `NOT_FOUND`
 * when the manifest is gone.
 */
async function storedBackup(service: BackupService, record: BackupRecord, signal?: AbortSignal): Promise<StoredBackup> {
  if (!(service instanceof ChunkedBackupService)) return { size: record.size, dataFields: {} };
  const m = await service.repository.readManifest(record.id, { signal });
  return {
    size: m.size,
    vmConfig: m.vmConfig ? Buffer.from(m.vmConfig, 'base64') : undefined,
    dataFields: { volumeId: m.volumeId, size: m.size, parentId: m.parentId, incremental: m.record.incremental ?? m.parentId !== undefined, createdAt: m.createdAt },
  };
}

/**
 * Writes backup `record` of `service` as a self-contained archive at `file` (format.ts). The
 * backup is restored into a private staging volume first (in `options.stagingDir`: see
 * ArchiveWriteOptions), so the service checks every chunk on the way (`CORRUPT` if the backup is
 * damaged). Its size, and the archived record's data fields, are the stored backup's
 * (storedBackup), whatever the catalog's record says. The archive appears under its name only when
 * complete: it is written as `<name>` in a private directory of this export's own beside it,
 * `.cairn-partial-XXXXXX` (createPartialFile: mode 0700, naming its owner process), created
 * exclusively, fsynced, then renamed over `file`; on any failure the directory is removed. An
 * export killed outright (SIGKILL) cannot remove it, so every export first removes the
 * `.cairn-partial-` directories beside its file whose owner is certainly dead (removeDeadTempDirs),
 * never a live export's. Two exports to one file at once never write into one file: the last
 * rename wins, whole.
 * `CONFLICT` unless the record's data is complete: `available`, or `restoring` (restores and
 * reads only read it). Takes no claim on the backup: `exportBackup` does, and is what the CLI
 * runs. Called directly, the VM configuration is read before the data: a backup deleted meanwhile
 * (`backup delete` in another process) is archived as it was when the restore read it, data and
 * VM configuration of that one backup, or, deleted before the restore read it, is `NOT_FOUND`
 * with nothing written. Progress in bytes per phase (progress.ts:
 * `restore`, `scan`, `write`). `NOT_SUPPORTED`, with nothing written, for a backup whose manifest
 * or sums would exceed what a reader accepts (MAX_METADATA_BYTES). A failure to write the file surfaces as the
 * CairnError its system error maps to (toCairnError: a missing directory `NOT_FOUND`, a full disk
 * `UNAVAILABLE`), never as an unhandled stream error. `CANCELLED` once `signal` is aborted (the
 * restore honours it; the writing checks it before each chunk), with the same cleanup.
 */
export async function writeArchive(
  service: BackupService,
  record: BackupRecord,
  file: string,
  options: ArchiveWriteOptions = {},
): Promise<ArchiveWriteResult> {
  if (record.status !== 'available' && record.status !== 'restoring') throw new CairnError('CONFLICT', `backup ${record.id} is ${record.status}, not available`);
  const wrapWrite = (err: unknown) => (isCairnError(err) ? err : toCairnError(err, undefined, `writing archive ${file}`));
  // Made first: a missing directory or a read-only disk fails before the restore runs.
  const partial = await createPartialFile(file).catch((err: unknown) => {
    throw wrapWrite(err);
  });
  const fh = await open(partial.path, 'wx', 0o600).catch(async (err: unknown) => {
    await partial.discard();
    throw wrapWrite(err);
  });
  let staging: StagingVolume | undefined;
  let writeError: unknown;
  const pack = tar.pack();
  try {
    // First, so that it and the data are of one backup: the restore reads the backup's manifest
    // once, and a manifest gone after that read (deleted meanwhile) takes nothing from either.
    const { size, vmConfig, dataFields } = await storedBackup(service, record, options.signal);
    throwIfAborted(options.signal, 'archive');
    staging = await StagingVolume.create(size, options.stagingDir, { makeParent: options.makeStagingDir });
    const rw = await staging.attach('rw');
    const progress = options.progress ?? (() => {});
    try {
      await service.restore(record, rw.device, { targetIsZeroed: true, signal: options.signal, progress: (done, total) => progress(done, total, 'restore') });
    } finally {
      await staging.driver.detach(rw.id);
    }
    const ro = await staging.attach('ro');
    try {
      const device = ro.device;
      // Pass 1: which chunks hold data, and their digests (the manifest lists them first).
      const chunks: ArchiveChunk[] = [];
      const toScan = allocatedChunks(await device.extents({ kind: 'allocated' }), device.size);
      const scanTotal = toScan.reduce((n, off) => n + Math.min(ARCHIVE_CHUNK, device.size - off), 0);
      let scanned = 0;
      progress(0, scanTotal, 'scan');
      for (const off of toScan) {
        throwIfAborted(options.signal, 'archive');
        const length = Math.min(ARCHIVE_CHUNK, device.size - off);
        const data = await device.read(off, length);
        scanned += length;
        progress(scanned, scanTotal, 'scan');
        if (isZero(data)) continue;
        chunks.push({ name: chunkName(off), offset: off, length, sha256: createHash('sha256').update(data).digest('hex') });
      }
      const dataTotal = chunks.reduce((n, c) => n + c.length, 0);
      // The owner and readers too: a claimed record (exportBackup) names this process (and others
      // reading it: BackupRecord.readers), which an archive has no use for.
      const { serviceData: _s, checkpointId: _c, status: _st, owner: _o, readers: _r, ...exported } = record;
      const manifest: ArchiveManifest = { format: ARCHIVE_FORMAT, createdAt: nowIso(), record: { ...exported, ...dataFields }, size, chunks, vmConfig: !!vmConfig };
      // Compact: a chunk takes ~150 bytes of it. An archive whose manifest or sums an import
      // would refuse (over MAX_METADATA_BYTES: ~1.7 TiB of non-zero data) is never written.
      const manifestBytes = Buffer.from(JSON.stringify(manifest));
      const sumsBytes = [MANIFEST_NAME, ...chunks.map((c) => c.name), ...(vmConfig ? [VM_CONFIG_NAME] : [])].reduce((n, name) => n + 64 + 2 + Buffer.byteLength(name) + 1, 0);
      if (manifestBytes.length > MAX_METADATA_BYTES || sumsBytes > MAX_METADATA_BYTES) {
        throw new CairnError('NOT_SUPPORTED', `backup ${record.id} has ${chunks.length} non-zero chunks: the archive's ${manifestBytes.length > MAX_METADATA_BYTES ? MANIFEST_NAME : SUMS_NAME} would exceed the ${MAX_METADATA_BYTES} bytes an import accepts`, {
          driver: 'archive',
          details: { backupId: record.id, chunks: chunks.length },
        });
      }
      // Pass 2: the tar itself.
      // `done` settles early only by rejecting (the file cannot be written); every entry races it,
      // so a write error ends the export at once with the real cause.
      const done = pipeline(pack, fh.createWriteStream({ flush: true })).catch((err) => {
        writeError = err;
        throw err;
      });
      done.catch(() => {});
      const sums: string[] = [];
      const add = async (name: string, data: Buffer): Promise<void> => {
        sums.push(`${createHash('sha256').update(data).digest('hex')}  ${name}`);
        const entry = new Promise<void>((resolve, reject) => {
          const sink = pack.entry({ name, size: data.length, mode: 0o600, mtime: new Date() }, data, (err) => (err ? reject(err) : resolve()));
          // A failed write destroys the pack, and the pack the entry in progress, which then emits
          // 'error': its callback above and `done` carry that error; unheard, it would crash the process.
          sink.on('error', () => {});
        });
        entry.catch(() => {});
        await Promise.race([entry, done]);
      };
      await add(MANIFEST_NAME, manifestBytes);
      let dataBytes = 0;
      progress(0, dataTotal, 'write');
      for (const c of chunks) {
        throwIfAborted(options.signal, 'archive');
        const data = await device.read(c.offset, c.length);
        if (createHash('sha256').update(data).digest('hex') !== c.sha256) throw new CairnError('INTERNAL', `staged data changed under ${c.name}`);
        await add(c.name, data);
        dataBytes += c.length;
        progress(dataBytes, dataTotal, 'write');
      }
      if (vmConfig) await add(VM_CONFIG_NAME, vmConfig);
      await add(SUMS_NAME, Buffer.from(`${sums.join('\n')}\n`));
      pack.finalize();
      await done; // the stream fsyncs and closes the file (flush) before it finishes
      const { notDurable } = await partial.publish();
      return { file, backupId: record.id, size, chunks: chunks.length, dataBytes, ...(notDurable ? { notDurable } : {}) };
    } finally {
      await staging.driver.detach(ro.id);
    }
  } catch (err) {
    pack.destroy();
    await fh.close().catch(() => {}); // already closed when the stream got that far
    await partial.discard();
    throw writeError !== undefined ? wrapWrite(writeError) : toCairnError(err);
  } finally {
    await staging?.dispose();
  }
}

/**
 * Writes backup `backupId` of `manager` as an archive at `file` (writeArchive), reading it under
 * the manager's protection (BackupManager.readBackup): while it runs the backup is `restoring`,
 * a `backup delete` of it (this process or any sharing the catalog) is refused with `CONFLICT`,
 * and a garbage collection keeps its data; restores of it by `manager` may run meanwhile. The
 * claim goes when the export ends, however it ends; one left by a process that died is settled by
 * the next recovery. Errors as readBackup's checks (`NOT_FOUND`, `CONFLICT`) and writeArchive.
 */
export function exportBackup(
  manager: BackupManager,
  backupId: string,
  file: string,
  options: ArchiveWriteOptions = {},
): Promise<ArchiveWriteResult> {
  return manager.readBackup(backupId, (record, service) => writeArchive(service, record, file, options), { signal: options.signal });
}
