/**
 * importRecord (Cinder's import_record): the stored data, not the exported document, says what a
 * backup is. A document that disagrees with the data on what it describes is refused.
 */
import { describe, expect, it } from 'vitest';
import { BackupManager, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver, RepositoryCatalog, type BackupRecord } from '../src/index.js';
import { MiB, chunkedRig, CountingStore, expectCode, filledVolume } from './helpers.js';

/** The exported document with its record's fields changed (`undefined` removes a field). */
function tampered(exported: string, fields: Partial<Record<keyof BackupRecord | string, unknown>>): string {
  const doc = JSON.parse(Buffer.from(exported, 'base64').toString('utf8'));
  doc.record = { ...doc.record, ...fields };
  return Buffer.from(JSON.stringify(doc)).toString('base64');
}

/** A chunked deployment with a full and an incremental backup, and another deployment (its own catalog) over the same repository. */
async function chunkedPair() {
  const r = await chunkedRig();
  const v = await filledVolume(r.volumes, 2 * MiB, 1);
  const full = await r.manager.backup({ volumeId: v.id, name: 'full', description: 'the first' });
  const inc = await r.manager.backup({ volumeId: v.id, incremental: true, name: 'inc' });
  const other = new BackupManager({ volumes: r.volumes, targets: { repo: r.service }, catalog: new MemoryCatalog() });
  return { ...r, v, full, inc, other };
}

/** A memory deployment with a full and an incremental backup, and another deployment (its own catalog) over the same service. */
async function memoryPair() {
  const volumes = new MemoryVolumeDriver();
  const service = new MemoryBackupService();
  const manager = new BackupManager({ volumes, targets: { memory: service }, catalog: new MemoryCatalog() });
  const other = new BackupManager({ volumes, targets: { memory: service }, catalog: new MemoryCatalog() });
  const v = await filledVolume(volumes, MiB, 2);
  const full = await manager.backup({ volumeId: v.id });
  const inc = await manager.backup({ volumeId: v.id, incremental: true });
  return { manager, other, full, inc };
}

describe('importRecord into a chunked repository', () => {
  it('importRecord(a document whose size or volumeId was changed) is INVALID_INPUT naming the field, and records nothing', async () => {
    const { manager, full, other } = await chunkedPair();
    const exported = await manager.exportRecord(full.id);
    for (const [field, value] of [
      ['size', full.size * 2],
      ['volumeId', 'another-volume'],
      ['createdAt', new Date(Date.parse(full.createdAt) - 86_400_000).toISOString()],
      ['parentId', 'some-other-backup'],
    ] as const) {
      await expect(other.importRecord(exported.service, tampered(exported.record, { [field]: value }))).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        details: { backupId: full.id, field },
      });
    }
    expect(await other.listBackups()).toEqual([]);
    await expectCode(other.getBackup(full.id), 'NOT_FOUND');
  });

  it("importRecord(an incremental's document without its parent) is INVALID_INPUT on parentId", async () => {
    const { manager, inc, other } = await chunkedPair();
    const exported = await manager.exportRecord(inc.id);
    await expect(other.importRecord(exported.service, tampered(exported.record, { parentId: undefined, incremental: false }))).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      details: { backupId: inc.id, field: 'parentId' },
    });
    expect(await other.listBackups()).toEqual([]);
  });

  it('importRecord(an untouched export) registers the record as the manifest describes it, and it restores', async () => {
    const { manager, service, full, inc, other } = await chunkedPair();
    for (const b of [full, inc]) {
      const exported = await manager.exportRecord(b.id);
      const imported = await other.importRecord(exported.service, exported.record);
      const { stats, ...stored } = (await service.listBackups()).find((x) => x.id === b.id)!;
      expect(imported).toMatchObject({
        id: b.id,
        name: b.name,
        description: b.description,
        volumeId: stored.volumeId,
        volumeName: stored.volumeName,
        size: stored.size,
        incremental: stored.incremental,
        createdAt: stored.createdAt,
        volumeMetadata: stored.volumeMetadata,
        stats,
        status: 'available',
        service: 'repo',
      });
      expect(imported.owner).toBeUndefined();
      expect(imported.size).toBe(b.size);
      expect(imported.parentId).toBe(stored.parentId);
      expect(imported.parentId).toBe(b.parentId);
    }
    const { volume } = await other.restore({ backupId: inc.id, newVolume: {} });
    expect(volume.size).toBe(inc.size);
  });

  it('importRecord reads the manifest once: the check once the record is written only asks whether it is still there', async () => {
    const store = new CountingStore('mem');
    const r = await chunkedRig(store);
    const v = await filledVolume(r.volumes, MiB, 5);
    const b = await r.manager.backup({ volumeId: v.id });
    const exported = await r.manager.exportRecord(b.id);
    const other = new BackupManager({ volumes: r.volumes, targets: { repo: r.service }, catalog: new MemoryCatalog() });
    store.reset();
    expect(await other.importRecord(exported.service, exported.record)).toMatchObject({ id: b.id, status: 'available', size: b.size });
    expect(store.keys('get', 'manifests/')).toEqual([`manifests/${b.id}`]);
  });

  it('importRecord of a backup whose manifest is gone is NOT_FOUND, of one whose manifest is damaged CORRUPT, both naming the backup, and records nothing', async () => {
    const { manager, store, full, inc, other } = await chunkedPair();
    const [gone, damaged] = [await manager.exportRecord(full.id), await manager.exportRecord(inc.id)];
    await store.delete(`manifests/${full.id}`);
    await store.put(`manifests/${inc.id}`, Buffer.from('not a manifest'));
    await expect(other.importRecord(gone.service, gone.record)).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining(full.id) });
    await expect(other.importRecord(damaged.service, damaged.record)).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringContaining(inc.id) });
    expect(await other.listBackups()).toEqual([]);
  });

  it("importRecord takes the document's own fields (name, description) but the manifest's description of the data, and drops fields no record has", async () => {
    const { manager, service, full, other } = await chunkedPair();
    const exported = await manager.exportRecord(full.id);
    const doc = tampered(exported.record, {
      name: 'renamed',
      description: 'moved here',
      volumeName: 'not the volume',
      volumeMetadata: { forged: 'yes' },
      stats: { bytesRead: 1, bytesNew: 1, bytesReused: 0, bytesStored: 1, durationMs: 1 },
      serviceData: { manifest: 'manifests/elsewhere' },
      failReason: 'INTERNAL: stale',
      chunkSize: 1,
      evil: true,
    });
    const imported = await other.importRecord(exported.service, doc);
    const stored = (await service.listBackups()).find((x) => x.id === full.id)!;
    expect(imported).toMatchObject({ name: 'renamed', description: 'moved here', volumeName: stored.volumeName, volumeMetadata: stored.volumeMetadata, stats: stored.stats });
    expect(imported.serviceData).toEqual({ repository: service.repository.config.id, manifest: `manifests/${full.id}` });
    expect(imported).not.toHaveProperty('failReason');
    expect(imported).not.toHaveProperty('chunkSize');
    expect(imported).not.toHaveProperty('evil');
    expect(await other.getBackup(full.id)).toEqual(imported);
  });

  it("exportRecord writes the manifest's data fields, so a record whose catalog copy disagrees (older versions kept the size at request time) still exports and imports", async () => {
    const { manager, service, full, other } = await chunkedPair();
    const catalog = new RepositoryCatalog(service.repository);
    await catalog.putBackup({ ...full, size: full.size / 2, createdAt: new Date(Date.parse(full.createdAt) + 1000).toISOString() });
    const exported = await manager.exportRecord(full.id);
    const imported = await other.importRecord(exported.service, exported.record);
    expect(imported).toMatchObject({ id: full.id, size: full.size, createdAt: full.createdAt });
  });

  it('importRecord(a document whose name is not a string) is INVALID_INPUT and records nothing', async () => {
    const { manager, full, other } = await chunkedPair();
    const exported = await manager.exportRecord(full.id);
    await expectCode(other.importRecord(exported.service, tampered(exported.record, { name: { $gt: '' } })), 'INVALID_INPUT');
    expect(await other.listBackups()).toEqual([]);
  });
});

describe('importRecord into the memory backup service', () => {
  it('importRecord(a document whose size, volumeId, parentId or createdAt was changed) is INVALID_INPUT naming the field, and records nothing', async () => {
    const { manager, other, full, inc } = await memoryPair();
    const exported = await manager.exportRecord(inc.id);
    for (const [field, value] of [
      ['size', inc.size + 1],
      ['volumeId', 'another-volume'],
      ['parentId', undefined],
      ['createdAt', '2001-01-01T00:00:00.000Z'],
    ] as const) {
      await expect(other.importRecord(exported.service, tampered(exported.record, { [field]: value }))).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        details: { backupId: inc.id, field },
      });
    }
    expect(await other.listBackups()).toEqual([]);
    const fullExport = await manager.exportRecord(full.id);
    await expectCode(other.importRecord(fullExport.service, tampered(fullExport.record, { parentId: inc.id })), 'INVALID_INPUT');
    expect(await other.listBackups()).toEqual([]);
  });

  it('importRecord(an untouched export) registers the record, without the writer\'s owner', async () => {
    const { manager, other, full, inc } = await memoryPair();
    for (const b of [full, inc]) {
      const exported = await manager.exportRecord(b.id);
      const imported = await other.importRecord(exported.service, exported.record);
      expect(imported).toMatchObject({ id: b.id, volumeId: b.volumeId, size: b.size, createdAt: b.createdAt, status: 'available' });
      expect(imported.parentId).toBe(b.parentId);
      expect(imported.owner).toBeUndefined();
    }
    expect((await other.listBackups()).map((b) => b.id)).toEqual([full.id, inc.id]);
  });
});

describe('importRecord: what the document may not decide', () => {
  it("the checkpointId is the stored backup's, not the document's (a forged one would make the next incremental miss changes), in both services", async () => {
    const chunked = await chunkedPair();
    const memory = await memoryPair();
    for (const { manager, other, full, inc } of [chunked, memory]) {
      expect(full.checkpointId, 'the backups were taken with a checkpoint').toBeTypeOf('string');
      for (const b of [full, inc]) {
        const exported = await manager.exportRecord(b.id);
        const imported = await other.importRecord(exported.service, tampered(exported.record, { checkpointId: 'forged-checkpoint' }));
        expect(imported.checkpointId).toBe(b.checkpointId);
      }
    }
  });

  it('a name or description that breaks the label rules is INVALID_INPUT naming the field, and records nothing', async () => {
    const { manager, other, full } = await chunkedPair();
    const exported = await manager.exportRecord(full.id);
    for (const [field, value] of [
      ['name', 'two\nlines'],
      ['name', 'n'.repeat(256)],
      ['description', 'd'.repeat(256)],
      ['description', 'bell\u0007'],
    ] as const) {
      await expect(other.importRecord(exported.service, tampered(exported.record, { [field]: value }))).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field } });
    }
    expect(await other.listBackups()).toEqual([]);
    // An empty name (a backup given none) imports.
    expect(await other.importRecord(exported.service, tampered(exported.record, { name: '' }))).toMatchObject({ id: full.id, name: '' });
  });
});
