import { describe, expect, it } from 'vitest';
import { MemoryCatalog, ordinal, type BackupRecord } from '../src/index.js';

describe('ordinal', () => {
  it('orders by code unit, not by a locale collation', () => {
    // A collation puts '_' before '-' and 'ab' before 'aB'; code units do not.
    expect(['a_b', 'ab', 'A', 'a.b', 'aB', 'a-b'].sort(ordinal)).toEqual(['A', 'a-b', 'a.b', 'aB', 'a_b', 'ab']);
    expect(ordinal('x', 'x')).toBe(0);
  });
});

describe('catalog listings', () => {
  const record = (id: string, createdAt: string): BackupRecord =>
    ({ id, createdAt, updatedAt: createdAt, volumeId: 'v', name: id, status: 'available', service: 's', size: 512, parentId: undefined }) as unknown as BackupRecord;

  it('list oldest first, ties broken by id in code-unit order', async () => {
    const c = new MemoryCatalog();
    for (const r of [record('b_1', '2026-12-05T10:00:00.000Z'), record('b-1', '2026-12-05T10:00:00.000Z'), record('a', '2026-12-05T11:00:00.000Z'), record('z', '2026-12-05T09:59:59.999Z')]) await c.putBackup(r);
    expect((await c.listBackups()).map((r) => r.id)).toEqual(['z', 'b-1', 'b_1', 'a']);
  });
});
