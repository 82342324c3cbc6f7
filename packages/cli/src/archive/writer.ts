import { createHash } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { CairnError, ChunkedBackupService, isCairnError, nowIso, syncDir, tempPathBeside, throwIfAborted, toCairnError, type BackupRecord, type BackupService } from '@cairn/core';
import * as tar from 'tar-stream';
import { ARCHIVE_CHUNK, ARCHIVE_FORMAT, chunkName, MANIFEST_NAME, SUMS_NAME, VM_CONFIG_NAME, type ArchiveChunk, type ArchiveManifest } from './format.js';
import { StagingVolume } from './staging.js';

export interface ArchiveWriteResult {
  file: string;
  backupId: string;
  size: number;
  /** Data entries written (non-zero chunks). */
  chunks: number;
  /** Bytes of data in the archive. */
  dataBytes: number;
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Writes backup `record` of `service` as a self-contained archive at `file` (format.ts). The
 * backup is restored into a private staging volume first, so the service checks every chunk on
 * the way (`CORRUPT` if the backup is damaged). The archive appears under its name only when
 * complete (written as a temporary file of this export's own beside it, `.<name>.<random>.tmp` as
 * volume export writes, created exclusively, fsynced, then renamed); on any failure it is removed.
 * Two exports to one file at once never write into one file: the last rename wins, whole.
 * `CONFLICT` unless the record is available. A failure to write the file surfaces as the
 * CairnError its system error maps to (toCairnError: a missing directory `NOT_FOUND`, a full disk
 * `UNAVAILABLE`), never as an unhandled stream error. `CANCELLED` once `signal` is aborted (the
 * restore honours it; the writing checks it before each chunk), with the same cleanup.
 */
export async function writeArchive(
  service: BackupService,
  record: BackupRecord,
  file: string,
  options: { progress?: (done: number, total: number) => void; signal?: AbortSignal } = {},
): Promise<ArchiveWriteResult> {
  if (record.status !== 'available') throw new CairnError('CONFLICT', `backup ${record.id} is ${record.status}, not available`);
  const partial = tempPathBeside(file);
  const wrapWrite = (err: unknown) => (isCairnError(err) ? err : toCairnError(err, undefined, `writing archive ${file}`));
  // Opened first: a missing directory or a read-only disk fails before the restore runs.
  const fh = await open(partial, 'wx', 0o600).catch((err) => {
    throw wrapWrite(err);
  });
  let staging: StagingVolume | undefined;
  let writeError: unknown;
  const pack = tar.pack();
  try {
    staging = await StagingVolume.create(record.size);
    const rw = await staging.attach('rw');
    try {
      await service.restore(record, rw.device, { targetIsZeroed: true, signal: options.signal, progress: options.progress });
    } finally {
      await staging.driver.detach(rw.id);
    }
    const ro = await staging.attach('ro');
    try {
      const device = ro.device;
      // Pass 1: which chunks hold data, and their digests (the manifest lists them first).
      const chunks: ArchiveChunk[] = [];
      for (const e of await device.extents({ kind: 'allocated' })) {
        const from = Math.floor(e.offset / ARCHIVE_CHUNK) * ARCHIVE_CHUNK;
        for (let off = from; off < e.offset + e.length; off += ARCHIVE_CHUNK) {
          throwIfAborted(options.signal, 'archive');
          if (chunks.at(-1)?.offset === off) continue;
          const length = Math.min(ARCHIVE_CHUNK, device.size - off);
          const data = await device.read(off, length);
          if (isZero(data)) continue;
          chunks.push({ name: chunkName(off), offset: off, length, sha256: createHash('sha256').update(data).digest('hex') });
        }
      }
      const vmConfig = service instanceof ChunkedBackupService ? await service.vmConfig(record.id) : undefined;
      const { serviceData: _s, checkpointId: _c, status: _st, ...exported } = record;
      const manifest: ArchiveManifest = { format: ARCHIVE_FORMAT, createdAt: nowIso(), record: exported, size: record.size, chunks, vmConfig: !!vmConfig };
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
          pack.entry({ name, size: data.length, mode: 0o600, mtime: new Date() }, data, (err) => (err ? reject(err) : resolve()));
        });
        entry.catch(() => {});
        await Promise.race([entry, done]);
      };
      await add(MANIFEST_NAME, Buffer.from(JSON.stringify(manifest, null, 2)));
      let dataBytes = 0;
      for (const c of chunks) {
        throwIfAborted(options.signal, 'archive');
        const data = await device.read(c.offset, c.length);
        if (createHash('sha256').update(data).digest('hex') !== c.sha256) throw new CairnError('INTERNAL', `staged data changed under ${c.name}`);
        await add(c.name, data);
        dataBytes += c.length;
      }
      if (vmConfig) await add(VM_CONFIG_NAME, vmConfig);
      await add(SUMS_NAME, Buffer.from(`${sums.join('\n')}\n`));
      pack.finalize();
      await done; // the stream fsyncs and closes the file (flush) before it finishes
      await rename(partial, file);
      await syncDir(dirname(file));
      return { file, backupId: record.id, size: record.size, chunks: chunks.length, dataBytes };
    } finally {
      await staging.driver.detach(ro.id);
    }
  } catch (err) {
    pack.destroy();
    await fh.close().catch(() => {}); // already closed when the stream got that far
    await rm(partial, { force: true });
    throw writeError !== undefined ? wrapWrite(writeError) : toCairnError(err);
  } finally {
    await staging?.dispose();
  }
}
