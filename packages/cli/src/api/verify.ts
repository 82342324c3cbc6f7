import { CairnError, type BackupService, type VerifyReport } from '@cairn/core';
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
  if (backupId === undefined) {
    const services = await Promise.all(Object.keys(api.cli.loaded.config.targets).map((name) => api.cli.target(name)));
    return apiJob({ kind: 'verify' }, async (signal) => outcome(merge(await Promise.all(services.map((s: BackupService) => s.verify(undefined, { signal }))))));
  }
  const backup = await api.manager.getBackup(backupId);
  const service = await api.cli.target(backup.service);
  return apiJob({ kind: 'verify', backupId: backup.id, volumeId: backup.volumeId, target: backup.service }, async (signal) => outcome(await service.verify(backup, { signal })));
}

/** The reports of several targets as one, as `BackupManager.verify()` merges them. */
function merge(reports: VerifyReport[]): VerifyReport {
  return { checked: reports.flatMap((r) => r.checked), problems: reports.flatMap((r) => r.problems), bytesChecked: reports.reduce((n, r) => n + r.bytesChecked, 0) };
}

function outcome(report: VerifyReport) {
  const n = report.problems.length;
  return {
    result: report,
    error: n === 0 ? undefined : new CairnError('CORRUPT', `verify found ${n} problem(s) in ${report.checked.length} backup(s)`, { details: { backups: report.problems.map((p) => p.backupId) } }),
    progress: { bytesDone: report.bytesChecked, bytesTotal: report.bytesChecked },
  };
}
