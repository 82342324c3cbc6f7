import { CairnError, ChunkedBackupService, isNotFound, nowIso, toCairnError, type BackupRecord, type BackupService, type Catalog, type Volume } from '@cairn/core';
import { readArchive } from './reader.js';

/**
 * Imports an archive into `service` and registers its record in `catalog`, keeping the
 * backup's id, volume, name, description and times. The archive is read and checked completely
 * first (see readArchive): a refused archive writes nothing. `ALREADY_EXISTS` when the id is
 * already in the catalog or the repository. The imported backup is a full backup (its parent
 * and change-tracking checkpoint belong to the deployment that made it). Not idempotent.
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
      ...r,
      name: r.name ?? '',
      description: r.description ?? '',
      volumeName: r.volumeName ?? '',
      volumeMetadata: r.volumeMetadata ?? {},
      size: manifest.size,
      status: 'creating',
      service: service.name,
      parentId: undefined,
      incremental: false,
      serviceData: {},
      updatedAt: nowIso(),
    };
    await catalog.putBackup(record);
    const ro = await staging.attach('ro');
    try {
      const volume: Volume = { id: r.volumeId, name: record.volumeName, size: manifest.size, status: 'available', createdAt: r.createdAt, metadata: record.volumeMetadata };
      const result = await service.backup(
        { backup: record, volume, vmConfig, signal: options.signal ?? new AbortController().signal, progress: options.progress ?? (() => {}) },
        { device: ro.device },
      );
      const done: BackupRecord = { ...record, status: 'available', serviceData: result.serviceData, stats: result.stats, updatedAt: nowIso() };
      await catalog.putBackup(done);
      return done;
    } catch (err) {
      const e = toCairnError(err);
      await catalog.putBackup({ ...record, status: 'error', failReason: `${e.code}: ${e.message}`, updatedAt: nowIso() });
      throw e;
    } finally {
      await staging.driver.detach(ro.id);
    }
  } finally {
    await staging.dispose();
  }
}

async function assertAbsent(service: BackupService, catalog: Catalog, id: string): Promise<void> {
  const known = await catalog.getBackup(id).then(
    () => true,
    (err) => (isNotFound(err) ? false : Promise.reject(err)),
  );
  const inRepo = service instanceof ChunkedBackupService && (await service.repository.readManifest(id).then(() => true, (err) => (isNotFound(err) ? false : Promise.reject(err))));
  if (known || inRepo) throw new CairnError('ALREADY_EXISTS', `backup ${id} is already here; delete it first to import the archive again`);
}
