import { CairnError, assertVerifiable, type VerifyReport } from '@cairn/core';
import type { ApiContext } from './api-context.js';
import { apiJob, type JobSpec } from './jobs.js';

/**
 * A verify job: one backup (`backupId`), or every backup of every configured target. Verify
 * reads and checks every chunk, so it runs as a job: it can take as long as a restore, and it
 * can be cancelled (the targets' verify honours an AbortSignal). Refused at once, no job made:
 * an unknown backup (`NOT_FOUND`), and one whose record has no complete data to verify
 * (`creating`, `deleting`, `error`, `error_deleting`: `CONFLICT`, details {backupId, status}, as
 * BackupManager.verify says; a record that changes status after this check still ends the job
 * `failed` with that `CONFLICT`). The job's result is the VerifyReport (docs/cli.md); with
 * problems the job ends `failed` with `CORRUPT` and still carries the report, as
 * `cairn backup verify` exits 5.
 */
export async function startVerify(api: ApiContext, backupId?: string): Promise<JobSpec> {
  const backup = backupId === undefined ? undefined : await api.manager.getBackup(backupId);
  if (backup) assertVerifiable(backup);
  const fields = backup ? { kind: 'verify' as const, backupId: backup.id, volumeId: backup.volumeId, target: backup.service } : { kind: 'verify' as const };
  return apiJob(fields, async (signal, progress) => {
    let reported = false;
    const report = await api.manager.verify(backup?.id, { signal, progress: (done, total) => ((reported = true), progress(done, total)) });
    return outcome(report, reported);
  });
}

/** The job's end: the report, CORRUPT when it found problems, and a final progress when the targets reported none while running. */
function outcome(report: VerifyReport, reported: boolean) {
  const n = report.problems.length;
  return {
    result: report,
    // `backups`: the backups broken; a problem of the repository itself (no backupId) names none.
    error: n === 0 ? undefined : new CairnError('CORRUPT', `verify found ${n} problem(s) in ${report.checked.length} backup(s)`, { details: { backups: report.problems.flatMap((p) => (p.backupId === undefined ? [] : [p.backupId])) } }),
    progress: reported ? undefined : { bytesDone: report.bytesChecked, bytesTotal: report.bytesChecked },
  };
}
