import assert from 'node:assert/strict';
import type { BackupPageQuery, BackupRecord, BackupSort, Catalog } from '@cairn/core';
import type { Group } from '../harness.js';
import { rejectsWithCode } from '../harness.js';
import { catalogRecord } from './cases.js';
import type { CatalogContext } from './context.js';

const ids = (records: readonly BackupRecord[]) => records.map((r) => r.id);

/**
 * 14 records of two volumes (`vol-p` 9, `vol-q` 5) with ids out of creation order, three sharing
 * one instant and names, statuses, sizes and update times that repeat, so every sort key has
 * ties that only the tie-breakers order.
 */
function population(): BackupRecord[] {
  const at = (minute: number) => `2026-04-01T08:${String(minute).padStart(2, '0')}:00.000Z`;
  const minutes = [7, 3, 3, 12, 3, 9, 1, 5, 12, 8, 2, 10, 6, 4];
  const names = ['daily', 'weekly', 'daily', '', 'daily', 'weekly', '', 'daily', 'weekly', 'daily', '', 'daily', 'weekly', 'daily'];
  const statuses = ['available', 'available', 'error', 'available', 'creating', 'available', 'available', 'error', 'available', 'available', 'deleting', 'available', 'available', 'error'] as const;
  return minutes.map((m, i) => ({
    ...catalogRecord(i % 3 === 2 ? 'vol-q' : 'vol-p', at(m), `p-${String((i * 5) % 14).padStart(2, '0')}`),
    name: names[i]!,
    status: statuses[i]!,
    size: (1 + (i % 4)) * 1024 * 1024,
    updatedAt: at(20 + (i % 5)),
  }));
}

/** The expected order, written out here apart from any catalog's: `keys` then createdAt, id in the first key's direction. */
function expected(records: readonly BackupRecord[], keys: readonly BackupSort[]): BackupRecord[] {
  const dir = keys[0]?.dir ?? 'asc';
  const all = [...keys, ...(['createdAt', 'id'] as const).filter((k) => !keys.some((s) => s.key === k)).map((key) => ({ key, dir }))];
  return [...records].sort((a, b) => {
    for (const { key, dir: d } of all) {
      const x = a[key];
      const y = b[key];
      if (x !== y) return (x < y ? -1 : 1) * (d === 'asc' ? 1 : -1);
    }
    return 0;
  });
}

/** Every page of `query` with `limit`, following `next`: the pages, checked to be full but the last, which alone has no `next`. */
async function allPages(catalog: Catalog, query: BackupPageQuery, limit: number, what: string): Promise<BackupRecord[]> {
  const out: BackupRecord[] = [];
  let marker: string | undefined;
  for (let n = 0; n < 100; n++) {
    const page = await catalog.listBackupPage({ ...query, limit, ...(marker !== undefined ? { marker } : {}) });
    out.push(...page.backups);
    if (page.next === undefined) return out;
    assert.equal(page.backups.length, limit, `${what}: a page followed by another is full`);
    assert.equal(page.next, page.backups.at(-1)!.id, `${what}: next is the page's last id`);
    marker = page.next;
  }
  assert.fail(`${what}: no last page after 100`);
}

const SORTS: { label: string; sort?: BackupSort[] }[] = [
  { label: 'default (oldest first)' },
  { label: 'createdAt:desc', sort: [{ key: 'createdAt', dir: 'desc' }] },
  { label: 'name:asc', sort: [{ key: 'name', dir: 'asc' }] },
  { label: 'size:desc,status:asc', sort: [{ key: 'size', dir: 'desc' }, { key: 'status', dir: 'asc' }] },
  { label: 'updatedAt:asc,id:desc', sort: [{ key: 'updatedAt', dir: 'asc' }, { key: 'id', dir: 'desc' }] },
  { label: 'volumeId:desc', sort: [{ key: 'volumeId', dir: 'desc' }] },
  { label: 'id:asc', sort: [{ key: 'id', dir: 'asc' }] },
];

/** listBackupPage: Cinder's `limit`, `marker`, `sort` and `name`, held to one order for every catalog. */
export const catalogPaging: Group<CatalogContext> = {
  name: 'paging (listBackupPage)',
  cases: [
    {
      name: 'paging through every record with several page sizes and sorts, both directions, yields each exactly once, in order (in a sibling too)',
      async run({ catalog, sibling }) {
        const all = population();
        for (const r of all) await catalog.putBackup(r);
        for (const reader of sibling ? [catalog, sibling] : [catalog]) {
          const who = reader === catalog ? '' : ' (sibling)';
          for (const { label, sort } of SORTS) {
            const want = ids(expected(all, sort ?? []));
            const whole = await reader.listBackupPage(sort ? { sort } : {});
            assert.deepEqual(ids(whole.backups), want, `sort ${label}, no limit${who}`);
            assert.equal(whole.next, undefined, `sort ${label}, no limit: no next${who}`);
            for (const limit of [1, 3, 5, 14, 20]) {
              assert.deepEqual(ids(await allPages(reader, sort ? { sort } : {}, limit, `sort ${label}, limit ${limit}${who}`)), want, `sort ${label}, limit ${limit}${who}`);
            }
          }
        }
        assert.deepEqual(ids(await catalog.listBackups()), ids(expected(all, [])), 'listBackups lists in the default order');
      },
    },
    {
      name: 'filters (volume, status, name) combine with paging and sorting',
      async run({ catalog }) {
        const all = population();
        for (const r of all) await catalog.putBackup(r);
        const queries: { label: string; query: BackupPageQuery; keep: (r: BackupRecord) => boolean }[] = [
          { label: 'volumeId', query: { volumeId: 'vol-p' }, keep: (r) => r.volumeId === 'vol-p' },
          { label: 'volumeId, createdAt:desc', query: { volumeId: 'vol-p', sort: [{ key: 'createdAt', dir: 'desc' }] }, keep: (r) => r.volumeId === 'vol-p' },
          { label: 'volumeId, name:desc', query: { volumeId: 'vol-q', sort: [{ key: 'name', dir: 'desc' }] }, keep: (r) => r.volumeId === 'vol-q' },
          { label: 'volumeId, status', query: { volumeId: 'vol-p', status: 'available' }, keep: (r) => r.volumeId === 'vol-p' && r.status === 'available' },
          { label: 'volumeId, status, desc', query: { volumeId: 'vol-p', status: 'available', sort: [{ key: 'createdAt', dir: 'desc' }] }, keep: (r) => r.volumeId === 'vol-p' && r.status === 'available' },
          { label: 'name', query: { name: 'daily' }, keep: (r) => r.name === 'daily' },
          { label: 'empty name', query: { name: '' }, keep: (r) => r.name === '' },
          { label: 'name, volumeId, desc', query: { name: 'daily', volumeId: 'vol-p', sort: [{ key: 'createdAt', dir: 'desc' }] }, keep: (r) => r.name === 'daily' && r.volumeId === 'vol-p' },
          { label: 'name, status, size', query: { name: 'weekly', status: 'available', sort: [{ key: 'size', dir: 'asc' }] }, keep: (r) => r.name === 'weekly' && r.status === 'available' },
          { label: 'name of none', query: { name: 'dai' }, keep: () => false },
        ];
        for (const { label, query, keep } of queries) {
          const want = ids(expected(all.filter(keep), query.sort ?? []));
          assert.deepEqual(ids((await catalog.listBackupPage(query)).backups), want, `${label}, no limit`);
          for (const limit of [1, 2, 4]) assert.deepEqual(ids(await allPages(catalog, query, limit, `${label}, limit ${limit}`)), want, `${label}, limit ${limit}`);
        }
        assert.deepEqual(ids(await catalog.listBackups({ name: 'weekly' })), ids(expected(all.filter((r) => r.name === 'weekly'), [])), 'listBackups({name})');
      },
    },
    {
      name: 'a marker is a place in the order: one the filter leaves out starts the page after where it sorts',
      async run({ catalog }) {
        const all = population();
        for (const r of all) await catalog.putBackup(r);
        const order = expected(all, []);
        const q = order.find((r) => r.volumeId === 'vol-q')!;
        const after = order.slice(order.indexOf(q) + 1).filter((r) => r.volumeId === 'vol-p');
        assert.deepEqual(ids((await catalog.listBackupPage({ volumeId: 'vol-p', marker: q.id })).backups), ids(after), 'asc');
        const desc = expected(all, [{ key: 'createdAt', dir: 'desc' }]);
        const before = desc.slice(desc.indexOf(q) + 1).filter((r) => r.volumeId === 'vol-p');
        assert.deepEqual(ids((await catalog.listBackupPage({ volumeId: 'vol-p', marker: q.id, sort: [{ key: 'createdAt', dir: 'desc' }] })).backups), ids(before), 'desc');
        const last = order.at(-1)!;
        assert.deepEqual(await catalog.listBackupPage({ marker: last.id, limit: 3 }), { backups: [] }, 'after the last record: an empty page, no next');
      },
    },
    {
      name: 'records deleted between pages are neither repeated nor skip others; a deleted marker is NOT_FOUND',
      async run({ catalog }) {
        const all = population();
        for (const r of all) await catalog.putBackup(r);
        const order = ids(expected(all, []));
        const first = await catalog.listBackupPage({ limit: 4 });
        assert.deepEqual(ids(first.backups), order.slice(0, 4));
        await catalog.deleteBackup(order[2]!); // already listed
        await catalog.deleteBackup(order[6]!); // not yet listed
        const second = await catalog.listBackupPage({ limit: 4, marker: first.next });
        assert.deepEqual(ids(second.backups), [order[4], order[5], order[7], order[8]], 'the page after, without the deleted record');
        await catalog.deleteBackup(second.next!);
        await rejectsWithCode(catalog.listBackupPage({ limit: 4, marker: second.next }), 'NOT_FOUND', 'a deleted marker');
      },
    },
    {
      name: 'a record replaced with another creation time or volume is paged once, at its new place; a marker is where its record is now',
      async run({ catalog, sibling }) {
        const all = population();
        for (const r of all) await catalog.putBackup(r);
        const order = expected(all, []);
        // The oldest record moved to the end, the second one to the other volume at one instant
        // with a third record (their ids then order them), the newest to the start.
        const moved = { ...order[0]!, createdAt: '2026-04-01T09:00:00.000Z' };
        const tie = order[5]!;
        const otherVolume = { ...order[1]!, volumeId: order[1]!.volumeId === 'vol-p' ? 'vol-q' : 'vol-p', createdAt: tie.createdAt };
        const early = { ...order.at(-1)!, createdAt: '2026-04-01T07:00:00.000Z' };
        for (const r of [moved, otherVolume, early]) await catalog.putBackup(r);
        const now = all.map((r) => [moved, otherVolume, early].find((x) => x.id === r.id) ?? r);
        for (const reader of sibling ? [catalog, sibling] : [catalog]) {
          const who = reader === catalog ? '' : ' (sibling)';
          for (const { label, sort } of SORTS.slice(0, 2)) {
            for (const { volume, keep } of [{ volume: undefined, keep: () => true }, { volume: 'vol-p', keep: (r: BackupRecord) => r.volumeId === 'vol-p' }, { volume: 'vol-q', keep: (r: BackupRecord) => r.volumeId === 'vol-q' }]) {
              const query: BackupPageQuery = { ...(sort ? { sort } : {}), ...(volume ? { volumeId: volume } : {}) };
              const want = expected(now.filter(keep), sort ?? []);
              for (const limit of [1, 2, 5]) assert.deepEqual(ids(await allPages(reader, query, limit, `${label}, ${volume ?? 'every volume'}, limit ${limit}${who}`)), ids(want), `${label}, ${volume ?? 'every volume'}, limit ${limit}${who}`);
              for (const marker of [moved, otherVolume, early]) {
                const after = expected(now, sort ?? []);
                const rest = after.slice(after.findIndex((r) => r.id === marker.id) + 1).filter(keep);
                assert.deepEqual(ids((await reader.listBackupPage({ ...query, marker: marker.id })).backups), ids(rest), `${label}, ${volume ?? 'every volume'}, after the moved ${marker.id}${who}`);
              }
            }
          }
        }
      },
    },
    {
      name: 'bad paging input is INVALID_INPUT (limit, sort) or NOT_FOUND (marker), and changes nothing',
      async run({ catalog }) {
        const all = population().slice(0, 4);
        for (const r of all) await catalog.putBackup(r);
        const bad: [string, BackupPageQuery][] = [
          ['limit 0', { limit: 0 }],
          ['limit -1', { limit: -1 }],
          ['limit 1.5', { limit: 1.5 }],
          ['limit NaN', { limit: Number.NaN }],
          ['limit 1001 (over the maximum)', { limit: 1001 }],
          ['limit as text', { limit: '2' as unknown as number }],
          ['unknown sort key', { sort: [{ key: 'colour' as never, dir: 'asc' }] }],
          ['unknown direction', { sort: [{ key: 'name', dir: 'up' as never }] }],
          ['a key twice', { sort: [{ key: 'name', dir: 'asc' }, { key: 'name', dir: 'desc' }] }],
        ];
        for (const [what, query] of bad) await rejectsWithCode(catalog.listBackupPage(query), 'INVALID_INPUT', what);
        await rejectsWithCode(catalog.listBackupPage({ marker: 'no-such-backup' }), 'NOT_FOUND', 'unknown marker');
        await rejectsWithCode(catalog.listBackupPage({ volumeId: 'vol-p', marker: 'no-such-backup' }), 'NOT_FOUND', 'unknown marker with volumeId');
        assert.deepEqual((await catalog.listBackupPage({ limit: 1000 })).backups.length, all.length, 'limit 1000 (the maximum) is accepted');
        assert.deepEqual(ids(await catalog.listBackups()), ids(expected(all, [])), 'the records are as they were');
      },
    },
  ],
};
