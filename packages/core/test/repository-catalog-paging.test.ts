import { describe, expect, it } from 'vitest';
import { ChunkedBackupService, MemoryCatalog, MemoryObjectStore, RepositoryCatalog, type BackupPageQuery, type BackupRecord, type Catalog } from '../src/index.js';
import { FAST_KDF, MiB } from './helpers.js';

/** Counts reads of catalog records. */
class CountingStore extends MemoryObjectStore {
  recordGets = 0;
  override async get(key: string, range?: Parameters<MemoryObjectStore['get']>[1]): Promise<Buffer> {
    if (key.startsWith('catalog/backups/')) this.recordGets++;
    return super.get(key, range);
  }
}

const record = (n: number, volumeId: string, minute: number, status: BackupRecord['status']): BackupRecord => {
  const at = new Date(Date.UTC(2026, 10, 24, 0, minute)).toISOString();
  return { id: `b-${String(n).padStart(3, '0')}`, name: n % 4 === 0 ? 'weekly' : 'daily', description: '', volumeId, volumeName: 'v', size: MiB, status, service: 'repo', incremental: false, volumeMetadata: {}, serviceData: {}, createdAt: at, updatedAt: at };
};

/** 60 records over three volumes (one id with a colon), created out of id order, some in error; the same in a memory catalog. */
async function catalogs() {
  const store = new CountingStore('mem');
  const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, passphrase: 'pw', init: { kdf: FAST_KDF } });
  const catalog = new RepositoryCatalog(service.repository);
  const memory = new MemoryCatalog();
  const volumes = ['vol-a', 'vol-b', 'pool:vol-c'];
  for (let i = 0; i < 60; i++) {
    const r = record(i, volumes[i % 3]!, (i * 7) % 60, i % 5 === 4 ? 'error' : 'available');
    await catalog.putBackup(r);
    await memory.putBackup(r);
  }
  return { store, catalog, memory, volumes };
}

async function pages(catalog: Catalog, query: BackupPageQuery): Promise<string[][]> {
  const out: string[][] = [];
  let marker: string | undefined;
  do {
    const page = await catalog.listBackupPage({ ...query, marker });
    out.push(page.backups.map((b) => b.id));
    marker = page.next;
  } while (marker !== undefined);
  return out;
}

describe('RepositoryCatalog.listBackupPage', () => {
  it('a page of one volume in creation order reads only about the page\'s records, with the memory catalog\'s answers', async () => {
    const { store, catalog, memory, volumes } = await catalogs();
    for (const volumeId of volumes) {
      for (const dir of ['asc', 'desc'] as const) {
        const sort = [{ key: 'createdAt' as const, dir }];
        store.recordGets = 0;
        const first = await catalog.listBackupPage({ volumeId, sort, limit: 3 });
        expect(first).toEqual(await memory.listBackupPage({ volumeId, sort, limit: 3 }));
        expect(first.backups).toHaveLength(3);
        expect(store.recordGets).toBeLessThanOrEqual(8); // one batch (READ_CONCURRENCY), of the volume's 20
        store.recordGets = 0;
        const second = await catalog.listBackupPage({ volumeId, sort, limit: 3, marker: first.next });
        expect(second).toEqual(await memory.listBackupPage({ volumeId, sort, limit: 3, marker: first.next }));
        expect(store.recordGets).toBeLessThanOrEqual(1 + 8); // the marker, then one batch
        for (const query of [{ volumeId, sort, limit: 4 }, { volumeId, sort, status: 'available' as const, limit: 7 }, { volumeId, sort, name: 'weekly', limit: 2 }]) {
          expect(await pages(catalog, query)).toEqual(await pages(memory, query));
        }
      }
    }
    // Another order, or no volume: every record of the volume, or every record, is read.
    store.recordGets = 0;
    await catalog.listBackupPage({ volumeId: 'vol-a', sort: [{ key: 'name', dir: 'asc' }], limit: 3 });
    expect(store.recordGets).toBe(20);
    store.recordGets = 0;
    await catalog.listBackupPage({ limit: 3 });
    expect(store.recordGets).toBe(60);
  });

  it('a record replaced with another creation time is paged once, at its new place (its old volume entry is skipped)', async () => {
    const { catalog, memory } = await catalogs();
    const [oldest] = await catalog.listBackups({ volumeId: 'vol-a' });
    const moved = { ...oldest!, createdAt: new Date(Date.UTC(2026, 10, 24, 2, 0)).toISOString() };
    await catalog.putBackup(moved);
    await memory.putBackup(moved);
    for (const dir of ['asc', 'desc'] as const) {
      const query = { volumeId: 'vol-a', sort: [{ key: 'createdAt' as const, dir }], limit: 3 };
      const got = await pages(catalog, query);
      expect(got).toEqual(await pages(memory, query));
      expect(got.flat().filter((id) => id === moved.id)).toHaveLength(1);
      expect(got.flat()).toHaveLength(20);
    }
  });
});
