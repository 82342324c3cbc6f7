/**
 * importRecord racing a delete of the same backup: the import checks the stored data, then writes
 * the record. A delete that removes the data (and then its record) in between must not leave an
 * `available` record of data that is gone.
 */
import { describe, expect, it } from 'vitest';
import { BackupManager, RepositoryCatalog, type BackupRecord, type CatalogPutOptions } from '../src/index.js';
import { MiB, chunkedRig, expectCode, filledVolume } from './helpers.js';

/** The repository's own catalog, whose `ifAbsent` writes (an import's) wait at a gate the test opens. */
class GatedCatalog extends RepositoryCatalog {
  gate: Promise<void> | undefined;
  reached: (() => void) | undefined;

  override async putBackup(record: BackupRecord, options?: CatalogPutOptions): Promise<void> {
    if (options?.ifAbsent && this.gate) {
      this.reached?.();
      await this.gate;
    }
    return super.putBackup(record, options);
  }
}

describe('importRecord racing a delete', () => {
  it('a delete that removes the data between the check and the write: the import is NOT_FOUND and records nothing', async () => {
    const r = await chunkedRig();
    const v = await filledVolume(r.volumes, MiB, 3);
    const b = await r.manager.backup({ volumeId: v.id });
    const exported = await r.manager.exportRecord(b.id);
    // A second process sharing the repository's catalog, importing the record.
    const catalog = new GatedCatalog(r.service.repository);
    const importer = new BackupManager({ volumes: r.volumes, targets: { repo: r.service }, catalog });
    let open!: () => void;
    catalog.gate = new Promise<void>((resolve) => (open = resolve));
    const reached = new Promise<void>((resolve) => (catalog.reached = resolve));
    const importing = importer.importRecord(exported.service, exported.record);
    importing.catch(() => undefined);
    // The import has checked the manifest; the delete now removes the manifest, then the record.
    await reached;
    await r.manager.deleteBackup(b.id);
    await expectCode(r.service.repository.readManifest(b.id), 'NOT_FOUND');
    open();
    await expect(importing).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining(b.id) });
    await expectCode(importer.getBackup(b.id), 'NOT_FOUND');
    await expectCode(r.manager.getBackup(b.id), 'NOT_FOUND');
    expect(await importer.listBackups()).toEqual([]);
  });

  it('without a delete, the gated import still registers the record (the second check passes)', async () => {
    const r = await chunkedRig();
    const v = await filledVolume(r.volumes, MiB, 4);
    const b = await r.manager.backup({ volumeId: v.id });
    const exported = await r.manager.exportRecord(b.id);
    const catalog = new GatedCatalog(r.service.repository);
    const importer = new BackupManager({ volumes: r.volumes, targets: { repo: r.service }, catalog });
    // The record is known to the shared catalog: removing it (not the data) lets the import run.
    await catalog.deleteBackup(b.id);
    const imported = await importer.importRecord(exported.service, exported.record);
    expect(imported).toMatchObject({ id: b.id, status: 'available', size: b.size });
    expect((await importer.getBackup(b.id)).status).toBe('available');
  });
});
