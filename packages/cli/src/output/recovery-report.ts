import type { RecoveryReport } from '@cairn/core';
import type { Output } from './output.js';

/**
 * Prints what a recovery did on stderr: one informational line counting what it resolved
 * (`--quiet` silences it) and one warning per step that failed (always printed: a record or
 * volume it could not resolve stays as it was). Records left alone (`skipped`) are not counted.
 */
export function printRecovery(out: Output, report: RecoveryReport, leftBy: string): void {
  const resolved =
    report.failedBackups.length +
    report.restoredBackups.length +
    report.resumedDeletes.length +
    report.resetVolumes.length +
    report.errorRestoringVolumes.length +
    report.removedSnapshots.length +
    (report.removedVolumes?.length ?? 0) +
    (report.clearedStates?.length ?? 0);
  if (resolved > 0) out.info(`recovered ${resolved} item(s) left in flight by ${leftBy}`);
  for (const e of report.errors) out.warn(`recovery: ${e}`);
}
