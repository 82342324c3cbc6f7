import type { BackupRecord } from '../contracts/records.js';
import { CairnError } from '../errors.js';

/** An ISO-8601 date-time with a zone (`Z` or `±hh:mm`), seconds and fraction optional. */
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})$/;

/** The first and last instants whose toISOString has a 4-digit year (`0000`…`9999`). */
const EARLIEST = new Date('0000-01-01T00:00:00.000Z').getTime();
const LATEST = new Date('9999-12-31T23:59:59.999Z').getTime();

/**
 * `value` in the one form catalogs keep times in, `toISOString`'s (UTC, milliseconds:
 * `2026-12-07T01:00:00.000Z`), so that ordinal order of stored times is time order; undefined
 * when it is no ISO-8601 date-time with a zone, a day past its month's end included
 * (`2026-02-30`, which `Date.parse` would take for March 2nd), or when its zone moves it out of
 * 0000-01-01T00:00:00.000Z…9999-12-31T23:59:59.999Z (`0000-01-01T00:00+01:00`): toISOString
 * would give such a time an expanded year (`-000001-…`, `+010000-…`), out of ordinal order with
 * the others and not a valid catalog key.
 */
export function canonicalTime(value: unknown): string | undefined {
  if (typeof value !== 'string' || !ISO_DATE_TIME.test(value) || !dayInMonth(value)) return undefined;
  const t = Date.parse(value);
  return t >= EARLIEST && t <= LATEST ? new Date(t).toISOString() : undefined;
}

/** Whether the `YYYY-MM-DD` that `value` (matching ISO_DATE_TIME) starts with is a day of its month. */
function dayInMonth(value: string): boolean {
  const [year, month, day] = value.slice(0, 10).split('-').map(Number) as [number, number, number];
  // Day 0 of the next month is the last of this one; Date.UTC maps years 0–99 to 1900–1999, so Feb 29 is judged on a year of the same leap rule 400 years on.
  const last = new Date(Date.UTC(year + 400, month, 0)).getUTCDate();
  return month >= 1 && month <= 12 && day >= 1 && day <= last;
}

/** Any time `Date.parse` reads, in `toISOString`'s form; undefined when it reads none. For times already stored. */
export function parsedTime(value: string): string | undefined {
  const t = Date.parse(value);
  return Number.isFinite(t) ? new Date(t).toISOString() : undefined;
}

/**
 * `record` with its createdAt and updatedAt canonical (canonicalTime), what Catalog.putBackup
 * stores. `INVALID_INPUT` (`details.field`, `details.backupId`) for either that is no ISO-8601
 * date-time with a zone, or one outside years 0000–9999 in UTC.
 */
export function withCanonicalTimes(record: BackupRecord): BackupRecord {
  const out = { ...record };
  for (const field of ['createdAt', 'updatedAt'] as const) {
    const t = canonicalTime(record[field]);
    if (t === undefined) throw new CairnError('INVALID_INPUT', `backup ${record.id}: ${field} ${JSON.stringify(record[field])} is not an ISO-8601 date-time with a zone within years 0000–9999 (UTC)`, { driver: 'catalog', details: { backupId: record.id, field } });
    out[field] = t;
  }
  return out;
}

/**
 * A stored record as catalogs return it: times canonical where they parse (parsedTime: a record
 * written before putBackup made them so), else as stored. Volume entry names use the same parse.
 */
export function readableTimes(record: BackupRecord): BackupRecord {
  const createdAt = parsedTime(record.createdAt) ?? record.createdAt;
  const updatedAt = parsedTime(record.updatedAt) ?? record.updatedAt;
  return createdAt === record.createdAt && updatedAt === record.updatedAt ? record : { ...record, createdAt, updatedAt };
}
