import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  assertDescription,
  assertStoredName,
  assertVolumeId,
  CairnError,
  ChunkedBackupService,
  currentOwner,
  holdRecord,
  IMPORT_CLAIM_KEY,
  importClaimOf,
  isAlreadyExists,
  isInterruptedImport,
  nowIso,
  throwIfAborted,
  toCairnError,
  unlessNotFound,
  type BackupRecord,
  type BackupService,
  type Catalog,
  type Volume,
} from '@cairn/core';
import * as tar from 'tar-stream';
import { readArchive, readEntry } from './reader.js';
import { isSystemError } from './system-error.js';
import type { ArchiveProgress } from './progress.js';
import { MANIFEST_NAME, MAX_METADATA_BYTES, RECORD_ID, type ArchiveManifest } from './format.js';

/** Where an archive is imported to. */
export interface ImportDestination {
  /** The target that gets the data. */
  service: BackupService;
  /** The catalog that gets the record (its `ifAbsent` writes make the claim of an id atomic). */
  catalog: Catalog;
}

export interface ImportOptions {
  progress?: ArchiveProgress;
  signal?: AbortSignal;
  /** The directory the archive's data is staged in (readArchive). Default: the system temporary directory. */
  stagingDir?: string;
  /** Make `stagingDir` (and its parents) when it is missing. Default false. */
  makeStagingDir?: boolean;
}

/**
 * Imports an archive into `to.service` and registers its record in `to.catalog`, keeping the
 * backup's id, volume, name, description and times. First the id is claimed (claimId), having
 * read only the archive's manifest: `ALREADY_EXISTS` when it is already in the catalog or the
 * repository, including while another import of the same archive runs; of concurrent imports of
 * one archive, in any processes sharing the catalog, exactly one proceeds, and the others are
 * refused before they read the archive's data. The claim is the record, `creating`, owned by this
 * process and held (live-records) while the import runs, so no recovery, of this process or
 * another, takes it for abandoned. Then the archive is read and checked completely (see
 * readArchive): a refused archive removes the claim and writes nothing else. Then the data is
 * written and the record becomes `available`; a failure from then on leaves it `error` with its
 * reason (as Cinder's import does), to be deleted before importing the archive again. An import
 * whose process died (killed, a crash) leaves its claim `creating`, which recovery makes `error`
 * (IMPORT_INTERRUPTED): an import of the archive into the same target replaces that record, and
 * what the interrupted one wrote (takeOverInterrupted).
 *
 * The imported backup is a full backup (its parent and change-tracking checkpoint belong to the
 * deployment that made it). Only the fields an exported record carries are kept (importedFields):
 * a crafted archive cannot set a checkpoint, owner, fail reason, status or service data. Without
 * a checkpoint, an imported backup never serves as a changed-block-tracking base: an incremental
 * based on it reads the whole volume. `CORRUPT` when the manifest changes between the claim and
 * the check (the file was rewritten meanwhile). Progress in bytes per phase (progress.ts: `read`,
 * then `backup`). Not idempotent.
 */
export async function importArchive(
  to: ImportDestination,
  file: string,
  options: ImportOptions = {},
): Promise<BackupRecord> {
  throwIfAborted(options.signal, 'archive');
  const head = await peekManifest(file);
  if (!head) {
    // Not an archive the reader takes: it says why, having written nothing.
    const { staging } = await readArchive(file, { stagingDir: options.stagingDir, makeStagingDir: options.makeStagingDir });
    await staging.dispose();
    throw changed(file);
  }
  const record: BackupRecord = {
    ...importedFields(head.record),
    size: head.size,
    status: 'creating',
    service: to.service.name,
    incremental: false,
    // Marks the claim as this import's (import-claim.ts): the data it writes names it.
    serviceData: { [IMPORT_CLAIM_KEY]: randomUUID() },
    owner: currentOwner(),
    updatedAt: nowIso(),
  };
  const letGo = holdRecord(record.id);
  try {
    await claimId(to, record);
    return await fillClaimed(to, file, record, head, options);
  } finally {
    letGo();
  }
}

/**
 * Reads and checks the archive, writes its data and makes the claimed record `available`. On
 * failure before the data is written the claim is removed; after, the record goes to `error`; once
 * the record is `available`, a failure to clean up the staging volume is thrown and the record
 * stays as it is. Either cleanup of the record failing leaves the record `creating`, which recovery fails to `error` once this
 * import no longer holds it; the import's own error is thrown either way.
 */
async function fillClaimed(
  to: ImportDestination,
  file: string,
  record: BackupRecord,
  head: ManifestHead,
  options: ImportOptions,
): Promise<BackupRecord> {
  const { service, catalog } = to;
  let writing = false;
  let finished = false;
  try {
    const progress = options.progress ?? (() => {});
    const { manifest, staging, vmConfig } = await readArchive(file, { signal: options.signal, progress, stagingDir: options.stagingDir, makeStagingDir: options.makeStagingDir });
    try {
      // A cancel while the archive was read removes the claim, as a refusal does: nothing is written yet.
      throwIfAborted(options.signal, 'archive');
      const r = manifest.record;
      if (r.id !== head.record.id || r.volumeId !== head.record.volumeId || r.createdAt !== head.record.createdAt || manifest.size !== head.size) throw changed(file);
      // The checked manifest's fields; the claim's creation time (a clamped one is the claim's).
      Object.assign(record, importedFields(r), { createdAt: record.createdAt });
      const ro = await staging.attach('ro');
      try {
        const volume: Volume = { id: r.volumeId, name: record.volumeName, size: manifest.size, status: 'available', createdAt: record.createdAt, metadata: record.volumeMetadata };
        writing = true;
        const result = await service.backup(
          { backup: record, volume, vmConfig, signal: options.signal ?? new AbortController().signal, progress: (done, total) => progress(done, total, 'backup') },
          { device: ro.device },
        );
        const done: BackupRecord = { ...record, status: 'available', serviceData: result.serviceData, stats: result.stats, owner: undefined, updatedAt: nowIso() };
        await catalog.putBackup(done);
        finished = true;
        return done;
      } finally {
        await staging.driver.detach(ro.id);
      }
    } finally {
      await staging.dispose();
    }
  } catch (err) {
    const e = toCairnError(err);
    // The record is complete and available: a failure of the staging's cleanup after that is
    // the import's error, never the record's.
    if (finished) throw e;
    const settle = writing
      ? catalog.putBackup({ ...record, status: 'error', owner: undefined, failReason: `${e.code}: ${e.message}`, updatedAt: nowIso() })
      : // In the record's section, as every removal of a record (BackupClaims): a reset of it in
        // another process (its read and its write in that section) never writes it back.
        catalog.section(record.id, () => catalog.deleteBackup(record.id));
    await settle.catch(() => undefined);
    throw e;
  }
}

/**
 * Registers `record` (`creating`, owned by this process) if its id is free: after a look for a
 * friendlier refusal, the record is written only-if-absent (Catalog `ifAbsent`), so that of
 * claims of one id by any processes sharing the catalog exactly one succeeds. `ALREADY_EXISTS`
 * (nothing written) when the id is a record of the catalog, or a backup of the target's
 * repository; except a record an interrupted import left (takeOverInterrupted), which is replaced.
 */
async function claimId(to: ImportDestination, record: BackupRecord): Promise<void> {
  const known = await unlessNotFound(to.catalog.getBackup(record.id));
  if (known && isInterruptedImport(known) && known.service === to.service.name) return takeOverInterrupted(to, record);
  await assertAbsent(to.service, to.catalog, record.id);
  try {
    await to.catalog.putBackup(record, { ifAbsent: true });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    await assertAbsent(to.service, to.catalog, record.id); // describes the record that won
    throw err;
  }
}

/**
 * Replaces the record an interrupted import of this id into this target left (`error`, an
 * import's claim settled by recovery: isInterruptedImport) with `record`, in the record's section
 * (judged and written alone on it, as recovery and deletes do: of retries at once exactly one
 * replaces it, and a delete that took it first leaves nothing to replace). What that import wrote
 * goes first, through the target's delete (as `backup delete` would): a repository manifest of the
 * id is deleted only when it names that import's claim (importClaimOf); a manifest of another
 * writer is `ALREADY_EXISTS`, as for any import. The import then writes the data again from the
 * archive (its chunks deduplicated against those the interrupted one stored). Killed at any point
 * of this, the record is still an interrupted import's (or this import's claim, which recovery
 * makes one), so the next retry goes on. A record that is no longer that when read in the section
 * is refused as claimId refuses it.
 */
async function takeOverInterrupted(to: ImportDestination, record: BackupRecord): Promise<void> {
  const { service, catalog } = to;
  await catalog.section(record.id, async () => {
    const known = await unlessNotFound(catalog.getBackup(record.id));
    if (!known || !isInterruptedImport(known) || known.service !== service.name) {
      await assertAbsent(service, catalog, record.id);
      await catalog.putBackup(record, { ifAbsent: true });
      return;
    }
    if (service instanceof ChunkedBackupService) {
      const stored = await unlessNotFound(service.repository.readManifest(record.id));
      if (stored && importClaimOf(stored.record) !== importClaimOf(known)) {
        throw new CairnError('ALREADY_EXISTS', `backup ${record.id} is already in target ${service.name}, written by another import than the interrupted one its record names`, { details: { backupId: record.id } });
      }
      if (stored) await service.delete(known);
    } else {
      await service.delete(known); // idempotent: the catalog alone knows these services' backups
    }
    await catalog.putBackup(record);
  });
}

/** What an import needs of the manifest before it reads the rest of the archive. */
interface ManifestHead {
  record: ArchiveManifest['record'];
  size: number;
}

/**
 * The record and size in the manifest that an archive starts with, read without the rest of the
 * archive; undefined when the file does not start with a manifest of that shape, or is missing
 * (readArchive then refuses it, and says why). A file that cannot be read (a system error, e.g.
 * EIO) is the CairnError its code maps to (toCairnError). Nothing of it is trusted beyond naming the id to claim: readArchive
 * checks the whole archive afterwards.
 */
async function peekManifest(file: string): Promise<ManifestHead | undefined> {
  const extract = tar.extract();
  const input = createReadStream(file);
  input.on('error', (err) => extract.destroy(err));
  input.pipe(extract);
  try {
    for await (const entry of extract) {
      const { name, size = 0 } = entry.header;
      if (name !== MANIFEST_NAME) return undefined;
      const body = await readEntry(entry as unknown as AsyncIterable<Buffer>, size, MAX_METADATA_BYTES);
      const m = JSON.parse(body.toString('utf8')) as { record?: Partial<ArchiveManifest['record']>; size?: unknown } | null;
      const r = m?.record;
      const ok = !!r && typeof r.id === 'string' && RECORD_ID.test(r.id) && typeof r.volumeId === 'string' && typeof r.createdAt === 'string' && Number.isSafeInteger(m!.size) && (m!.size as number) > 0;
      return ok ? { record: r as ArchiveManifest['record'], size: m!.size as number } : undefined;
    }
    return undefined;
  } catch (err) {
    // A read that failed (EIO…) is no answer about the file: said now, or a read that then passes
    // would have the import report the file as changed while it was imported.
    if (isSystemError(err) && err.code !== 'ENOENT') throw toCairnError(err, 'archive', `reading archive ${file}`);
    return undefined;
  } finally {
    extract.destroy();
    input.destroy();
  }
}

const changed = (file: string): CairnError => new CairnError('CORRUPT', `${file} changed while it was imported`, { driver: 'archive' });

/**
 * The fields of an archived record that an import keeps: id, name, description, volume id, name
 * and metadata, and the creation time. Everything else (checkpointId, owner, failReason, parentId,
 * stats, any unknown field) is dropped. A creation time that is not a valid date or lies in the
 * future is clamped to now (the import time), so an archive cannot make its backup the newest
 * forever. Strings of the wrong type become empty; metadata keeps string values only. A name,
 * volume name or description that breaks the label rules (`assertDisplayName`,
 * `assertDescription`: at most 255 characters, no control characters), and a volume id that is not
 * a volume id (`assertVolumeId`: at most MAX_VOLUME_ID_BYTES bytes, which the catalog's entries
 * are keyed by), is `INVALID_INPUT` (`details.field`): the archive is refused before anything is
 * written.
 */
export function importedFields(r: ArchiveManifest['record']): Pick<BackupRecord, 'id' | 'name' | 'description' | 'volumeId' | 'volumeName' | 'volumeMetadata' | 'createdAt'> {
  const str = (v: unknown) => (typeof v === 'string' ? v : '');
  // Own data properties (fromEntries): an assignment `metadata['__proto__'] = v` would set the
  // prototype instead (a string is ignored), losing a key the rest of Cairn keeps.
  const metadata: Record<string, string> =
    r.volumeMetadata && typeof r.volumeMetadata === 'object' ? Object.fromEntries(Object.entries(r.volumeMetadata).filter(([, v]) => typeof v === 'string')) : {};
  const now = nowIso();
  const created = Date.parse(r.createdAt);
  const createdAt = Number.isFinite(created) && created <= Date.parse(now) ? new Date(created).toISOString() : now;
  const name = str(r.name);
  const volumeName = str(r.volumeName);
  const description = str(r.description);
  assertStoredName(name, 'name', 'archive');
  assertStoredName(volumeName, 'volumeName', 'archive');
  assertDescription(description, 'description', 'archive');
  assertVolumeId(r.volumeId, 'volumeId', 'archive');
  return { id: r.id, name, description, volumeId: r.volumeId, volumeName, volumeMetadata: metadata, createdAt };
}

async function assertAbsent(service: BackupService, catalog: Catalog, id: string): Promise<void> {
  const known = await unlessNotFound(catalog.getBackup(id));
  if (known) {
    const why = known.status === 'creating' ? 'it is being written (an import in progress, or one that crashed: recovery then marks it error)' : 'delete it first to import the archive again';
    throw new CairnError('ALREADY_EXISTS', `backup ${id} is already here (${known.status}); ${why}`, { details: { backupId: id, status: known.status } });
  }
  const inRepo = service instanceof ChunkedBackupService && (await unlessNotFound(service.repository.readManifest(id))) !== undefined;
  if (inRepo) throw new CairnError('ALREADY_EXISTS', `backup ${id} is already in target ${service.name}`, { details: { backupId: id } });
}
