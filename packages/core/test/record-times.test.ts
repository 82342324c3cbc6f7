/**
 * Catalog times (util/record-times): an ISO-8601 date-time with a zone is stored canonical; one
 * that names no day of the calendar is refused, never moved to another day.
 */
import { describe, expect, it } from 'vitest';
import { MemoryCatalog, Repository, RepositoryCatalog, type BackupRecord } from '../src/index.js';
import { canonicalTime } from '../src/util/record-times.js';
import { memoryAndPosixStores } from './store-kinds.js';

const stores = memoryAndPosixStores('record-times');

const record = (createdAt: string): BackupRecord => ({
  id: 'b-1',
  name: '',
  description: '',
  volumeId: 'vol-1',
  volumeName: '',
  size: 512,
  status: 'available',
  service: 'memory',
  incremental: false,
  volumeMetadata: {},
  serviceData: {},
  createdAt,
  updatedAt: '2026-12-07T01:00:00.000Z',
});

describe('canonicalTime', () => {
  it('refuses a day past the end of its month, which Date.parse would move into the next month', () => {
    for (const value of ['2026-02-29T00:00:00Z', '2026-02-30T00:00Z', '2026-04-31T10:00:00.000+02:00', '2100-02-29T00:00Z', '1900-02-29T00:00Z', '0001-02-29T00:00Z']) {
      expect(canonicalTime(value), value).toBeUndefined();
    }
  });

  it('takes the last day of every month, and February 29th of leap years', () => {
    const last = ['01-31', '02-28', '03-31', '04-30', '05-31', '06-30', '07-31', '08-31', '09-30', '10-31', '11-30', '12-31'];
    for (const day of last) expect(canonicalTime(`2026-${day}T12:00:00Z`)).toBe(`2026-${day}T12:00:00.000Z`);
    for (const year of ['2024', '2000', '0004', '0000']) expect(canonicalTime(`${year}-02-29T00:00Z`)).toBe(`${year}-02-29T00:00:00.000Z`);
    expect(canonicalTime('2026-03-01T01:00:00+02:00')).toBe('2026-02-28T23:00:00.000Z');
  });

  it('a catalog refuses such a time with INVALID_INPUT and stores nothing', async () => {
    const catalog = new MemoryCatalog();
    await expect(catalog.putBackup(record('2026-02-30T00:00:00.000Z'))).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'createdAt' } });
    await expect(catalog.getBackup('b-1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('times a zone moves out of years 0000–9999', () => {
  // toISOString would give them an expanded year (`-000001-12-31T23:00:00.000Z`,
  // `+010000-01-01T…`): out of ordinal order with every other stored time (pages of a listing
  // by createdAt skipped or repeated records) or not a valid catalog key.
  const outside = ['0000-01-01T00:00+01:00', '0000-01-01T00:59:59.999+01:00', '9999-12-31T23:59:59.999-00:01', '9999-12-31T23:00-01:00'];

  it('canonicalTime refuses them, and keeps the first and last instants of the range', () => {
    for (const value of outside) expect(canonicalTime(value), value).toBeUndefined();
    expect(canonicalTime('0000-01-01T01:00+01:00')).toBe('0000-01-01T00:00:00.000Z');
    expect(canonicalTime('0000-01-01T00:00:00Z')).toBe('0000-01-01T00:00:00.000Z');
    expect(canonicalTime('9999-12-31T23:59:59.999Z')).toBe('9999-12-31T23:59:59.999Z');
    expect(canonicalTime('9999-12-31T22:59:59.999-01:00')).toBe('9999-12-31T23:59:59.999Z');
  });

  it.each(stores)('a repository catalog (%s) refuses them with INVALID_INPUT naming the field, and stores nothing', async (_kind, make) => {
    const store = await make();
    await Repository.init(store, {});
    const catalog = new RepositoryCatalog(await Repository.open(store));
    for (const value of outside) {
      await expect(catalog.putBackup(record(value)), value).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'createdAt', backupId: 'b-1' } });
      await expect(catalog.putBackup({ ...record('2026-12-07T01:00:00.000Z'), updatedAt: value }), value).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'updatedAt' } });
    }
    await expect(catalog.getBackup('b-1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await catalog.listBackups({})).toEqual([]);
    // The edges are stored, and list in time order.
    await catalog.putBackup({ ...record('9999-12-31T22:59:59.999-01:00'), id: 'b-last' });
    await catalog.putBackup({ ...record('0000-01-01T01:00+01:00'), id: 'b-first' });
    await catalog.putBackup({ ...record('2026-12-07T01:00:00Z'), id: 'b-now' });
    const page = await catalog.listBackupPage({ limit: 10, sort: [{ key: 'createdAt', dir: 'asc' }] });
    expect(page.backups.map((b) => [b.id, b.createdAt])).toEqual([
      ['b-first', '0000-01-01T00:00:00.000Z'],
      ['b-now', '2026-12-07T01:00:00.000Z'],
      ['b-last', '9999-12-31T23:59:59.999Z'],
    ]);
  });
});
