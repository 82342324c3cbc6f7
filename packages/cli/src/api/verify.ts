import { CairnError, type VerifyReport } from '@cairn/core';
import type { ApiContext } from './api-context.js';
import { apiJob, type JobSpec } from './jobs.js';

/**
 * A verify job: one backup (`backupId`), or every backup of every configured target. Verify
 * reads and checks every chunk, so it runs as a job: it can take as long as a restore, and it
 * can be cancelled (the targets' verify honours an AbortSignal). Unknown backup: `NOT_FOUND` at
 * once. The job's result is the VerifyReport (docs/cli.md); with problems the job ends `failed`
 * with `CORRUPT` and still carries the report, as `cairn backup verify` exits 5.
 */
export async function startVerify(api: ApiContext, backupId?: string): Promise<JobSpec> {
  if (backupId === undefined) return apiJob({ kind: 'verify' }, async (signal) => outcome(await api.manager.verify(undefined, { signal })));
  const backup = await api.manager.getBackup(backupId);
  return apiJob({ kind: 'verify', backupId: backup.id, volumeId: backup.volumeId, target: backup.service }, async (signal) => outcome(await api.manager.verify(backup.id, { signal })));
}

function outcome(report: VerifyReport) {
  const n = report.problems.length;
  return {
    result: report,
    error: n === 0 ? undefined : new CairnError('CORRUPT', `verify found ${n} problem(s) in ${report.checked.length} backup(s)`, { details: { backups: report.problems.map((p) => p.backupId) } }),
    progress: { bytesDone: report.bytesChecked, bytesTotal: report.bytesChecked },
  };
}
