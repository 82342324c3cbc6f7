import type { BackupService, VerifyOptions, VerifyReport } from '../contracts/backup-service.js';
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
 * `error`) are reported as the targets report them.
 */
export async function verifyAll(catalog: Pick<Catalog, 'getBackup' | 'listBackups'>, targets: BackupService[], options: VerifyOptions): Promise<VerifyReport> {
  const verifiable = new Set((await catalog.listBackups()).filter((b) => VERIFIABLE.has(b.status)).map((b) => b.id));
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
  return {
    checked: reports.flatMap((r) => r.checked).filter((id) => !deleted.has(id)),
    problems: reports.flatMap((r) => r.problems).filter((p) => p.backupId === undefined || !deleted.has(p.backupId)),
    bytesChecked: reports.reduce((n, r) => n + r.bytesChecked, 0),
  };
}
