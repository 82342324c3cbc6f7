import { describe, expect, it } from 'vitest';
import type { BackupPageQuery, Catalog } from '../src/index.js';
import { volumeEntryKey } from '../src/repository/repository-catalog.js';
import { RECORDS, sixtyRecordCatalogs } from './helpers.js';

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
        store.reset();
        const first = await catalog.listBackupPage({ volumeId, sort, limit: 3 });
        expect(first).toEqual(await memory.listBackupPage({ volumeId, sort, limit: 3 }));
        expect(first.backups).toHaveLength(3);
        expect(store.count('get', RECORDS)).toBeLessThanOrEqual(8); // one batch (READ_CONCURRENCY), of the volume's 20
        store.reset();
        const second = await catalog.listBackupPage({ volumeId, sort, limit: 3, marker: first.next });
        expect(second).toEqual(await memory.listBackupPage({ volumeId, sort, limit: 3, marker: first.next }));
        expect(store.count('get', RECORDS)).toBeLessThanOrEqual(1 + 8); // the marker, then one batch
        for (const query of [{ volumeId, sort, limit: 4 }, { volumeId, sort, status: 'available' as const, limit: 7 }, { volumeId, sort, name: 'weekly', limit: 2 }]) {
          expect(await pages(catalog, query)).toEqual(await pages(memory, query));
        }
      }
    }
    // Another order: every record of the volume is read.
    store.reset();
    await catalog.listBackupPage({ volumeId: 'vol-a', sort: [{ key: 'name', dir: 'asc' }], limit: 3 });
    expect(store.count('get', RECORDS)).toBe(20);
  });

  it('a page of every volume in creation order reads only about the page\'s records (through the volume entries), with the memory catalog\'s answers', async () => {
    const { store, catalog, memory } = await catalogs();
    for (const sort of [undefined, [{ key: 'createdAt' as const, dir: 'asc' as const }], [{ key: 'createdAt' as const, dir: 'desc' as const }]]) {
      store.reset();
      const first = await catalog.listBackupPage({ sort, limit: 3 });
      expect(first).toEqual(await memory.listBackupPage({ sort, limit: 3 }));
      expect(first.backups).toHaveLength(3);
      expect(store.count('get', RECORDS)).toBeLessThanOrEqual(8); // one batch (READ_CONCURRENCY), of 60
      store.reset();
      const second = await catalog.listBackupPage({ sort, limit: 10, marker: first.next });
      expect(second).toEqual(await memory.listBackupPage({ sort, limit: 10, marker: first.next }));
      expect(store.count('get', RECORDS)).toBeLessThanOrEqual(1 + 16); // the marker, then two batches
      for (const query of [{ sort, limit: 7 }, { sort, status: 'available' as const, limit: 5 }, { sort, name: 'weekly', limit: 4 }, { sort, status: 'error' as const }]) {
        expect(await pages(catalog, query)).toEqual(await pages(memory, query));
      }
    }
    // Another order: every record is read.
    store.reset();
    await catalog.listBackupPage({ sort: [{ key: 'name', dir: 'asc' }], limit: 3 });
    expect(store.count('get', RECORDS)).toBe(60);
  });

  it('without a volume, a record replaced with another creation time or volume is paged once, at its new place; an entry whose record is gone is skipped', async () => {
    const { store, catalog, memory, record } = await catalogs();
    const [oldest, next] = await catalog.listBackups();
    const moved = { ...oldest!, createdAt: new Date(Date.UTC(2026, 10, 24, 2, 0)).toISOString() };
    const otherVolume = { ...next!, volumeId: 'vol-b' === next!.volumeId ? 'vol-a' : 'vol-b' };
    for (const r of [moved, otherVolume]) {
      await catalog.putBackup(r);
      await memory.putBackup(r);
    }
    // An entry left by a delete that stopped between the record and its entry.
    await store.put(volumeEntryKey(record(99, 'vol-a', 30, 'available')), Buffer.alloc(0));
    for (const dir of ['asc', 'desc'] as const) {
      const query = { sort: [{ key: 'createdAt' as const, dir }], limit: 7 };
      const got = await pages(catalog, query);
      expect(got).toEqual(await pages(memory, query));
      expect(got.flat().filter((id) => id === moved.id || id === otherVolume.id)).toHaveLength(2);
      expect(got.flat()).toHaveLength(60);
    }
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
