/**
 * Catalog times (util/record-times): an ISO-8601 date-time with a zone is stored canonical; one
 * that names no day of the calendar is refused, never moved to another day.
 */
import { describe, expect, it } from 'vitest';
import { MemoryCatalog, type BackupRecord } from '../src/index.js';
import { canonicalTime } from '../src/util/record-times.js';

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
