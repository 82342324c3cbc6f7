import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { ChunkedBackupService, RepositoryCatalog, type BackupRecord } from '@cairn/core';
import { tempStore } from './helpers.js';

// putBackup replaces a record whole (Catalog contract), createdAt and volume included; the
// replaced record's old volume entry stays behind. latestBackup must still answer what
// listBackups lists last.

const record = (id: string, createdAt: string, volumeId = 'vol'): BackupRecord => ({
  id,
  name: id,
  description: '',
  volumeId,
  volumeName: volumeId,
  size: 1,
  status: 'available',
  service: 'posix',
  incremental: false,
  volumeMetadata: {},
  serviceData: {},
  createdAt,
  updatedAt: createdAt,
});

describe('a repository catalog record replaced with another creation time or volume', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  async function open(): Promise<{ catalog: RepositoryCatalog; close: () => Promise<void> }> {
    const store = await tempStore('catalog-replaced');
    dirs.push(store.directory);
    const service = await ChunkedBackupService.open(store, { name: 'posix', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024 } });
    return { catalog: new RepositoryCatalog(service.repository), close: () => service.close() };
  }

  it('latestBackup is the newest record even when more old entries than one read batch sort above it', async () => {
    const { catalog, close } = await open();
    await catalog.putBackup(record('newest', '2026-01-01T00:00:03.000Z'));
    // Nine records first written as the newest, then replaced with an older creation time.
    for (let i = 0; i < 9; i++) {
      await catalog.putBackup(record(`moved-${i}`, '2026-01-01T00:00:05.000Z'));
      await catalog.putBackup(record(`moved-${i}`, '2026-01-01T00:00:01.000Z'));
    }
    const listed = await catalog.listBackups({ volumeId: 'vol' });
    expect(listed.at(-1)?.id).toBe('newest');
    expect(await catalog.latestBackup({ volumeId: 'vol' })).toEqual(listed.at(-1));
    await close();
  });

  it('latestBackup of a volume a record moved away from is not that record', async () => {
    const { catalog, close } = await open();
    await catalog.putBackup(record('old', '2026-01-01T00:00:01.000Z', 'from'));
    await catalog.putBackup(record('moving', '2026-01-01T00:00:09.000Z', 'from'));
    await catalog.putBackup(record('moving', '2026-01-01T00:00:09.000Z', 'to'));
    expect((await catalog.listBackups({ volumeId: 'from' })).map((r) => r.id)).toEqual(['old']);
    expect((await catalog.latestBackup({ volumeId: 'from' }))?.id).toBe('old');
    expect((await catalog.latestBackup({ volumeId: 'to' }))?.id).toBe('moving');
    await close();
  });
});
