import { describe, expect, it } from 'vitest';
import { chunkedRig, expectCode, MiB } from './helpers.js';
import { CairnError, MemoryObjectStore, RepositoryCatalog, type BackupRecord } from '../src/index.js';

const record = (fields: Partial<BackupRecord>): BackupRecord => ({
  id: 'b1',
  name: '',
  description: '',
  volumeId: 'vol-a',
  volumeName: 'a',
  size: MiB,
  status: 'creating',
  service: 'repo',
  incremental: false,
  volumeMetadata: {},
  serviceData: {},
  createdAt: '2026-12-01T00:00:00.000Z',
  updatedAt: '2026-12-01T00:00:00.000Z',
  ...fields,
});

describe('RepositoryCatalog.putBackup(ifAbsent) losing a race', () => {
  it('fails with ALREADY_EXISTS even when removing its volume entry fails, and the volume lists the record once', async () => {
    const store = new MemoryObjectStore('mem');
    const { service } = await chunkedRig(store);
    const catalog = new RepositoryCatalog(service.repository);
    await catalog.putBackup(record({ status: 'available' }));
    // Another writer's record lands between the loser's look and its write: the look misses it.
    const head = store.head.bind(store);
    let missOnce = true;
    store.head = async (key) => {
      if (missOnce && key === 'catalog/backups/b1') {
        missOnce = false;
        throw new CairnError('NOT_FOUND', 'not yet', { driver: 'mem' });
      }
      return head(key);
    };
    const del = store.delete.bind(store);
    store.delete = async (key) => {
      if (key.startsWith('catalog/') && key !== 'catalog/backups/b1') throw new CairnError('UNAVAILABLE', 'store went away', { driver: 'mem' });
      return del(key);
    };
    await expectCode(catalog.putBackup(record({ createdAt: '2026-12-02T00:00:00.000Z' }), { ifAbsent: true }), 'ALREADY_EXISTS');
    store.delete = del;
    const listed = await catalog.listBackups({ volumeId: 'vol-a' });
    expect(listed.map((r) => [r.id, r.status])).toEqual([['b1', 'available']]);
  });
});
