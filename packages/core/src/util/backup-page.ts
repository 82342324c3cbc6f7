import type { BackupPage, BackupPageQuery, BackupSort, BackupSortKey } from '../contracts/catalog.js';
import type { BackupRecord } from '../contracts/records.js';
import { CairnError, isNotFound } from '../errors.js';
import { ordinal } from './order.js';

/** The keys a backup listing sorts by (BackupSortKey). */
export const BACKUP_SORT_KEYS: readonly BackupSortKey[] = ['createdAt', 'updatedAt', 'id', 'name', 'status', 'size', 'volumeId'];

/** The largest page a listing returns (BackupPageQuery.limit); Cinder's default `osapi_max_limit`. */
export const MAX_BACKUP_PAGE_LIMIT = 1000;

const invalid = (field: string, message: string): CairnError => new CairnError('INVALID_INPUT', message, { driver: 'catalog', details: { field } });

/**
 * A page query's limit and complete order, checked (see BackupPageQuery): `INVALID_INPUT` with
 * `details.field` (`limit`, `sort`) for a bad one. The order ends with the tie-breakers
 * `createdAt` and `id` (where absent, in the first key's direction), so it is total.
 */
export function checkPageQuery(query: Pick<BackupPageQuery, 'limit' | 'sort'>): { limit: number | undefined; sort: BackupSort[] } {
  const { limit } = query;
  if (limit !== undefined && (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1 || limit > MAX_BACKUP_PAGE_LIMIT)) {
    throw invalid('limit', `limit must be a whole number from 1 to ${MAX_BACKUP_PAGE_LIMIT}, not ${JSON.stringify(limit)}`);
  }
  const sort: BackupSort[] = [];
  for (const s of query.sort ?? []) {
    if (!BACKUP_SORT_KEYS.includes(s?.key)) throw invalid('sort', `unknown sort key ${JSON.stringify(s?.key)}: one of ${BACKUP_SORT_KEYS.join(', ')}`);
    if (s.dir !== 'asc' && s.dir !== 'desc') throw invalid('sort', `sort direction of ${s.key} must be asc or desc, not ${JSON.stringify(s.dir)}`);
    if (sort.some((t) => t.key === s.key)) throw invalid('sort', `sort key ${s.key} given twice`);
    sort.push({ key: s.key, dir: s.dir });
  }
  const dir = sort[0]?.dir ?? 'asc';
  for (const key of ['createdAt', 'id'] as const) if (!sort.some((s) => s.key === key)) sort.push({ key, dir });
  return { limit, sort };
}

/**
 * `key[:dir]` items separated by commas (`createdAt:desc,name`), as Cinder's `sort` parameter; a
 * key without a direction is ascending. `INVALID_INPUT` (`details.field: 'sort'`) for an empty
 * item, an unknown key or direction.
 */
export function parseBackupSort(text: string): BackupSort[] {
  const sort = text.split(',').map((item): BackupSort => {
    const [key = '', dir = 'asc', ...rest] = item.trim().split(':');
    if (key === '' || rest.length > 0) throw invalid('sort', `sort must be key[:asc|desc] items separated by commas, not ${JSON.stringify(text)}`);
    return { key: key as BackupSortKey, dir: dir as BackupSort['dir'] };
  });
  return checkPageQuery({ sort }).sort.slice(0, sort.length);
}

/** A limit written as decimal digits, checked as checkPageQuery does (`INVALID_INPUT`, `details.field: 'limit'`). */
export function parsePageLimit(text: string): number {
  if (!/^[0-9]{1,16}$/.test(text)) throw invalid('limit', `limit must be a whole number from 1 to ${MAX_BACKUP_PAGE_LIMIT}, not ${JSON.stringify(text)}`);
  const limit = Number(text);
  checkPageQuery({ limit });
  return limit;
}

/** The order `sort` (complete, from checkPageQuery) puts records in. */
export function backupOrder(sort: readonly BackupSort[]): (a: BackupRecord, b: BackupRecord) => number {
  return (a, b) => {
    for (const { key, dir } of sort) {
      const c = key === 'size' ? Math.sign(a.size - b.size) : ordinal(String(a[key] ?? ''), String(b[key] ?? ''));
      if (c !== 0) return dir === 'asc' ? c : -c;
    }
    return 0;
  };
}

/**
 * The marker's record: the catalog's `NOT_FOUND` (with `details.field: 'marker'`) when no backup
 * has that id; undefined without a marker.
 */
export async function markerRecord(getBackup: (id: string) => Promise<BackupRecord>, marker: string | undefined): Promise<BackupRecord | undefined> {
  if (marker === undefined) return undefined;
  try {
    return await getBackup(marker);
  } catch (err) {
    if (isNotFound(err)) throw new CairnError('NOT_FOUND', `marker ${JSON.stringify(marker)} names no backup (deleted since? start the listing over)`, { driver: 'catalog', cause: err, details: { field: 'marker', marker } });
    throw err;
  }
}

/**
 * The page of `sorted` (in `order`) after `marker`'s place in that order (from the start without
 * one), at most `limit` records; `next` when records follow it.
 */
export function pageOf(sorted: readonly BackupRecord[], order: (a: BackupRecord, b: BackupRecord) => number, marker: BackupRecord | undefined, limit: number | undefined): BackupPage {
  const start = marker === undefined ? 0 : sorted.findIndex((r) => order(r, marker) > 0);
  const from = start < 0 ? sorted.length : start;
  const end = limit === undefined ? sorted.length : Math.min(sorted.length, from + limit);
  const backups = sorted.slice(from, end);
  return end < sorted.length ? { backups, next: backups.at(-1)!.id } : { backups };
}

/** The direction of a complete order that is creation order (`createdAt`, then `id`, one direction), else undefined. */
export function creationOrder(sort: readonly BackupSort[]): 'asc' | 'desc' | undefined {
  const [first, second] = sort;
  return sort.length === 2 && first!.key === 'createdAt' && second!.key === 'id' && first!.dir === second!.dir ? first!.dir : undefined;
}
