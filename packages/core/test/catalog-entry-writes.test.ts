/**
 * RepositoryCatalog.putBackup's volume entry on an update: written only when it is missing (a
 * head, not a durable put of the same empty object, for each of a backup's record updates), and
 * still written before the record when it is: a record never lacks its entry.
 */
import { describe, expect, it } from 'vitest';
import { volumeEntryKey } from '../src/repository/repository-catalog.js';
import { RECORDS, sixtyRecordCatalogs } from './helpers.js';

const ENTRIES = 'catalog/by-volume/';

describe('RepositoryCatalog.putBackup of a record that exists', () => {
  it('writes the record alone while its volume entry is there', async () => {
    const { store, catalog, record } = await sixtyRecordCatalogs({ id: (n) => `b-${n}` });
    const r = { ...record(100, 'vol-a', 59, 'creating'), owner: undefined };
    await catalog.putBackup(r, { ifAbsent: true });
    expect(store.count('put', ENTRIES)).toBe(1);
    store.reset();
    for (const status of ['creating', 'available'] as const) await catalog.putBackup({ ...r, status, updatedAt: new Date(Date.UTC(2026, 0, 2)).toISOString() });
    expect(store.count('put', ENTRIES)).toBe(0);
    expect(store.count('put', RECORDS)).toBe(2);
    expect((await catalog.getBackup(r.id)).status).toBe('available');
    expect((await catalog.latestBackup({ volumeId: 'vol-a', status: 'available' }))?.id).toBe(r.id);
  });

  it('writes a missing volume entry again, before the record', async () => {
    const { store, catalog, record } = await sixtyRecordCatalogs({ id: (n) => `b-${n}` });
    const r = record(100, 'vol-b', 59, 'available');
    await catalog.putBackup(r);
    await store.delete(volumeEntryKey(r));
    expect((await catalog.listBackups({ volumeId: 'vol-b' })).map((b) => b.id)).not.toContain(r.id);
    store.reset();
    await catalog.putBackup({ ...r, name: 'renamed' });
    expect(store.keys('put').filter((k) => k.startsWith(ENTRIES) || k.startsWith(RECORDS))).toEqual([volumeEntryKey(r), `${RECORDS}${r.id}`]);
    expect((await catalog.listBackups({ volumeId: 'vol-b' })).find((b) => b.id === r.id)?.name).toBe('renamed');
  });
});
