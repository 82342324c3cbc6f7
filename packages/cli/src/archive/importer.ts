import { CairnError, ChunkedBackupService, currentOwner, isNotFound, nowIso, toCairnError, type BackupRecord, type BackupService, type Catalog, type Repository, type Volume } from '@cairn/core';
import { readArchive } from './reader.js';
import type { ArchiveManifest } from './format.js';

/** Where an archive is imported to. */
export interface ImportDestination {
  /** The target that gets the data. */
  service: BackupService;
  /** The catalog that gets the record. */
  catalog: Catalog;
  /**
   * The locks of the repository holding `catalog` (every process importing into that catalog
   * sees them): they make the claim of a backup id atomic across processes.
   */
  locks: Repository['locks'];
}

/**
 * Imports an archive into `to.service` and registers its record in `to.catalog`, keeping the
 * backup's id, volume, name, description and times. The archive is read and checked completely
 * first (see readArchive): a refused archive writes nothing. Then the id is claimed (claimId):
 * `ALREADY_EXISTS` when it is already in the catalog or the repository, including while another
 * import of the same archive runs; of two concurrent imports of one archive, exactly one
 * proceeds and the other writes nothing. The imported backup is a full backup (its parent
 * and change-tracking checkpoint belong to the deployment that made it). Only the fields an
 * exported record carries are kept (importedFields): a crafted archive cannot set a checkpoint,
 * owner, fail reason, status or service data. Without a checkpoint, an imported backup never
 * serves as a changed-block-tracking base: an incremental based on it reads the whole volume.
 * While the import runs, the `creating` record carries this process as its owner, so another
 * process's recovery leaves it alone. Not idempotent.
 */
export async function importArchive(
  to: ImportDestination,
  file: string,
  options: { progress?: (done: number, total: number) => void; signal?: AbortSignal } = {},
): Promise<BackupRecord> {
  const { service, catalog } = to;
  const { manifest, staging, vmConfig } = await readArchive(file);
  try {
    const r = manifest.record;
    const record: BackupRecord = {
      ...importedFields(r),
      size: manifest.size,
      status: 'creating',
      service: service.name,
      incremental: false,
      serviceData: {},
      owner: currentOwner(),
      updatedAt: nowIso(),
    };
    await claimId(to, record, options.signal);
    const ro = await staging.attach('ro');
    try {
      const volume: Volume = { id: r.volumeId, name: record.volumeName, size: manifest.size, status: 'available', createdAt: record.createdAt, metadata: record.volumeMetadata };
      const result = await service.backup(
        { backup: record, volume, vmConfig, signal: options.signal ?? new AbortController().signal, progress: options.progress ?? (() => {}) },
        { device: ro.device },
      );
      const done: BackupRecord = { ...record, status: 'available', serviceData: result.serviceData, stats: result.stats, owner: undefined, updatedAt: nowIso() };
      await catalog.putBackup(done);
      return done;
    } catch (err) {
      const e = toCairnError(err);
      await catalog.putBackup({ ...record, status: 'error', owner: undefined, failReason: `${e.code}: ${e.message}`, updatedAt: nowIso() });
      throw e;
    } finally {
      await staging.driver.detach(ro.id);
    }
  } finally {
    await staging.dispose();
  }
}

/**
 * Registers `record` (`creating`, owned by this process) if its id is free: the check and the
 * write run under a lock named after the id (a `volume` lock of `import:<id>`, waited for; it
 * excludes nothing else, since no volume has such an id), so two processes cannot both find
 * the id free. The lock is held only for the check and the write: from then on the record
 * itself tells others the id is taken. `ALREADY_EXISTS` when it is not free (nothing written).
 */
async function claimId(to: ImportDestination, record: BackupRecord, signal: AbortSignal | undefined): Promise<void> {
  const lock = await to.locks.acquire('volume', { volumeId: `import:${record.id}`, purpose: `import backup ${record.id}`, wait: true, signal });
  try {
    await assertAbsent(to.service, to.catalog, record.id);
    await to.catalog.putBackup(record);
  } finally {
    await lock.release();
  }
}

/**
 * The fields of an archived record that an import keeps: id, name, description, volume id, name
 * and metadata, and the creation time. Everything else (checkpointId, owner, failReason, parentId,
 * stats, any unknown field) is dropped. A creation time that is not a valid date or lies in the
 * future is clamped to now (the import time), so an archive cannot make its backup the newest
 * forever. Strings of the wrong type become empty; metadata keeps string values only.
 */
export function importedFields(r: ArchiveManifest['record']): Pick<BackupRecord, 'id' | 'name' | 'description' | 'volumeId' | 'volumeName' | 'volumeMetadata' | 'createdAt'> {
  const str = (v: unknown) => (typeof v === 'string' ? v : '');
  const metadata: Record<string, string> = {};
  if (r.volumeMetadata && typeof r.volumeMetadata === 'object') {
    for (const [k, v] of Object.entries(r.volumeMetadata)) if (typeof v === 'string') metadata[k] = v;
  }
  const now = nowIso();
  const created = Date.parse(r.createdAt);
  const createdAt = Number.isFinite(created) && created <= Date.parse(now) ? new Date(created).toISOString() : now;
  return { id: r.id, name: str(r.name), description: str(r.description), volumeId: r.volumeId, volumeName: str(r.volumeName), volumeMetadata: metadata, createdAt };
}

async function assertAbsent(service: BackupService, catalog: Catalog, id: string): Promise<void> {
  const known = await catalog.getBackup(id).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err)));
  if (known) {
    const why = known.status === 'creating' ? 'it is being written (an import in progress, or one that crashed: recovery then marks it error)' : 'delete it first to import the archive again';
    throw new CairnError('ALREADY_EXISTS', `backup ${id} is already here (${known.status}); ${why}`, { details: { backupId: id, status: known.status } });
  }
  const inRepo = service instanceof ChunkedBackupService && (await service.repository.readManifest(id).then(() => true, (err) => (isNotFound(err) ? false : Promise.reject(err))));
  if (inRepo) throw new CairnError('ALREADY_EXISTS', `backup ${id} is already in target ${service.name}`, { details: { backupId: id } });
}
