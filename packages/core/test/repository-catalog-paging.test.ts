import { describe, expect, it } from 'vitest';
import type { BackupPageQuery, Catalog } from '../src/index.js';
import { sixtyRecordCatalogs } from './helpers.js';

/** The catalogs: ids `b-NNN`, every fourth record named weekly, the rest daily, all of service repo. */
const catalogs = () => sixtyRecordCatalogs({ id: (n) => `b-${String(n).padStart(3, '0')}`, name: (n) => (n % 4 === 0 ? 'weekly' : 'daily') });

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
        store.gets = 0;
        const first = await catalog.listBackupPage({ volumeId, sort, limit: 3 });
        expect(first).toEqual(await memory.listBackupPage({ volumeId, sort, limit: 3 }));
        expect(first.backups).toHaveLength(3);
        expect(store.gets).toBeLessThanOrEqual(8); // one batch (READ_CONCURRENCY), of the volume's 20
        store.gets = 0;
        const second = await catalog.listBackupPage({ volumeId, sort, limit: 3, marker: first.next });
        expect(second).toEqual(await memory.listBackupPage({ volumeId, sort, limit: 3, marker: first.next }));
        expect(store.gets).toBeLessThanOrEqual(1 + 8); // the marker, then one batch
        for (const query of [{ volumeId, sort, limit: 4 }, { volumeId, sort, status: 'available' as const, limit: 7 }, { volumeId, sort, name: 'weekly', limit: 2 }]) {
          expect(await pages(catalog, query)).toEqual(await pages(memory, query));
        }
      }
    }
    // Another order, or no volume: every record of the volume, or every record, is read.
    store.gets = 0;
    await catalog.listBackupPage({ volumeId: 'vol-a', sort: [{ key: 'name', dir: 'asc' }], limit: 3 });
    expect(store.gets).toBe(20);
    store.gets = 0;
    await catalog.listBackupPage({ limit: 3 });
    expect(store.gets).toBe(60);
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
