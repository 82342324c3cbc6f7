import type { BackupService, VerifyOptions, VerifyProblem, VerifyReport } from '../contracts/backup-service.js';
import type { ProgressSink } from '../contracts/progress.js';
import type { Catalog } from '../contracts/catalog.js';
import type { BackupRecord } from '../contracts/records.js';
import { CairnError, isCorrupt, isNotFound, unlessNotFound } from '../errors.js';

/*
 * BackupManager.verify. A backup deleted while a verify reads it (by this process or another
 * sharing the catalog) is left out of the report, not reported broken: its record says which
 * backups were deleted meanwhile (gone, `deleting` or `error_deleting` once the verify is done),
 * as a delete moves its record to `deleting` before the target deletes anything.
 */

/** Statuses of a record whose data is complete, so `verify(backupId)` checks it. */
const VERIFIABLE: ReadonlySet<BackupRecord['status']> = new Set(['available', 'restoring']);

/**
 * `CONFLICT` (details {backupId, status}) unless the record's data is complete (`available`,
 * `restoring`): the rule of BackupManager.verify(backupId), for callers that refuse up front.
 */
export function assertVerifiable(backup: BackupRecord): void {
  if (VERIFIABLE.has(backup.status)) return;
  const hint = backup.status === 'error' ? ' (reset-state to available checks the data of a failed backup)' : '';
  throw new CairnError('CONFLICT', `backup ${backup.id} is ${backup.status}: it has no complete data to verify${hint}`, { details: { backupId: backup.id, status: backup.status } });
}

/**
 * Verifies one backup (its record verifiable: assertVerifiable). A verify that finds it broken,
 * or that rejects with `NOT_FOUND`/`CORRUPT`, is judged by the record read again then: gone is
 * `NOT_FOUND` (details.backupId), as for an unknown backup; no longer verifiable (a delete began)
 * is assertVerifiable's `CONFLICT`. Otherwise the report, or the verify's error, stands.
 */
export async function verifyOne(catalog: Pick<Catalog, 'getBackup'>, service: BackupService, backup: BackupRecord, options: VerifyOptions): Promise<VerifyReport> {
  const stillThere = async (): Promise<void> => {
    const now = await unlessNotFound(catalog.getBackup(backup.id));
    if (!now) throw new CairnError('NOT_FOUND', `backup ${backup.id} was deleted while it was verified`, { details: { backupId: backup.id } });
    assertVerifiable(now);
  };
  let report: VerifyReport;
  try {
    report = await service.verify(backup, options);
  } catch (err) {
    if (isNotFound(err) || isCorrupt(err)) await stillThere();
    throw err;
  }
  if (report.problems.length > 0) await stillThere();
  return report;
}

/**
 * Verifies every backup of every target, their reports merged (progress summed over the
 * targets). A problem of a backup whose record was verifiable before the verify and is gone or
 * no longer verifiable after it is left out, and so is the backup from `checked`. Problems of
 * backups the catalog had no verifiable record of before (data no record names, a record in
 * `error`) are reported as the targets report them. A record verifiable before the verify that
 * its target's report does not check (its data gone behind the catalog's back, e.g. deleted by
 * another deployment that imported the record) is in `checked` with a `NOT_FOUND` problem,
 * unless the record, read again after the verify, is gone or no longer verifiable (deleted
 * meanwhile). Records of a target this manager does not have are not checked.
 */
export async function verifyAll(catalog: Pick<Catalog, 'getBackup' | 'listBackups'>, targets: BackupService[], options: VerifyOptions): Promise<VerifyReport> {
  const records = (await catalog.listBackups()).filter((b) => VERIFIABLE.has(b.status));
  const verifiable = new Set(records.map((b) => b.id));
  const each = targets.map(() => ({ done: 0, total: 0 }));
  const sink = (k: number): ProgressSink | undefined =>
    options.progress &&
    ((done, total) => {
      each[k] = { done, total };
      options.progress!(
        each.reduce((n, e) => n + e.done, 0),
        each.reduce((n, e) => n + e.total, 0),
      );
    });
  const reports = await Promise.all(targets.map((t, k) => t.verify(undefined, { signal: options.signal, progress: sink(k) })));
  const deleted = new Set<string>();
  for (const id of new Set(reports.flatMap((r) => r.problems.flatMap((p) => (p.backupId === undefined ? [] : [p.backupId]))))) {
    if (!verifiable.has(id)) continue;
    const now = await unlessNotFound(catalog.getBackup(id));
    if (!now || !VERIFIABLE.has(now.status)) deleted.add(id);
  }
  const unchecked = await uncheckedRecords(catalog, targets, reports, records);
  return {
    checked: [...reports.flatMap((r) => r.checked).filter((id) => !deleted.has(id)), ...unchecked.map((b) => b.id)],
    problems: [...reports.flatMap((r) => r.problems).filter((p) => p.backupId === undefined || !deleted.has(p.backupId)), ...unchecked.map(notHeld)],
    bytesChecked: reports.reduce((n, r) => n + r.bytesChecked, 0),
  };
}

/**
 * The records of `records` (verifiable before the verify) whose target is one of `targets` and
 * whose target's report neither checked them nor names them in a problem, as they are now: those
 * read again that are gone or no longer verifiable (deleted meanwhile) are left out.
 */
async function uncheckedRecords(catalog: Pick<Catalog, 'getBackup'>, targets: BackupService[], reports: VerifyReport[], records: BackupRecord[]): Promise<BackupRecord[]> {
  const seen = new Map(targets.map((t, k) => [t.name, new Set([...reports[k].checked, ...reports[k].problems.flatMap((p) => (p.backupId === undefined ? [] : [p.backupId]))])]));
  const out: BackupRecord[] = [];
  for (const b of records) {
    const ofTarget = seen.get(b.service);
    if (!ofTarget || ofTarget.has(b.id)) continue;
    const now = await unlessNotFound(catalog.getBackup(b.id));
    if (now && VERIFIABLE.has(now.status)) out.push(now);
  }
  return out;
}

/** The problem of a verifiable record whose target holds no backup of that id. */
function notHeld(b: BackupRecord): VerifyProblem {
  return {
    backupId: b.id,
    code: 'NOT_FOUND',
    message: `backup ${b.id} is ${b.status} in the catalog but target ${b.service} holds no data of it (deleted behind this catalog's back, e.g. by another deployment that imported its record and deleted it there): a restore of it fails, and so does an incremental based on it; delete the backup`,
  };
}
