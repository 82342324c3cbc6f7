import { CairnError, ChunkedBackupService, currentOwner, isNotFound, nowIso, toCairnError, type BackupRecord, type BackupService, type Catalog, type Volume } from '@cairn/core';
import { readArchive } from './reader.js';
import type { ArchiveManifest } from './format.js';

/**
 * Imports an archive into `service` and registers its record in `catalog`, keeping the
 * backup's id, volume, name, description and times. The archive is read and checked completely
 * first (see readArchive): a refused archive writes nothing. `ALREADY_EXISTS` when the id is
 * already in the catalog or the repository. The imported backup is a full backup (its parent
 * and change-tracking checkpoint belong to the deployment that made it). Only the fields an
 * exported record carries are kept (importedFields): a crafted archive cannot set a checkpoint,
 * owner, fail reason, status or service data. Without a checkpoint, an imported backup never
 * serves as a changed-block-tracking base: an incremental based on it reads the whole volume.
 * While the import runs, the `creating` record carries this process as its owner, so another
 * process's recovery leaves it alone. Not idempotent.
 */
export async function importArchive(
  service: BackupService,
  catalog: Catalog,
  file: string,
  options: { progress?: (done: number, total: number) => void; signal?: AbortSignal } = {},
): Promise<BackupRecord> {
  const { manifest, staging, vmConfig } = await readArchive(file);
  try {
    const r = manifest.record;
    await assertAbsent(service, catalog, r.id);
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
    await catalog.putBackup(record);
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
  const known = await catalog.getBackup(id).then(
    () => true,
    (err) => (isNotFound(err) ? false : Promise.reject(err)),
  );
  const inRepo = service instanceof ChunkedBackupService && (await service.repository.readManifest(id).then(() => true, (err) => (isNotFound(err) ? false : Promise.reject(err))));
  if (known || inRepo) throw new CairnError('ALREADY_EXISTS', `backup ${id} is already here; delete it first to import the archive again`);
}
