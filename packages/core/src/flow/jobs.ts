import type { BackupRecord } from '../contracts/records.js';

export type JobKind = 'backup' | 'restore';

/** A running backup or restore. */
export interface Job {
  id: string;
  kind: JobKind;
  backupId: string;
  volumeId: string;
  /**
   * Settles with the backup's record: the final one (backup), or as it is once the restore has
   * ended (`available`, or still `restoring` while other restores of the same backup run).
   */
  done: Promise<BackupRecord>;
  /**
   * Requests cancellation; the job ends with `CANCELLED` (at once while it waits for its
   * volume's lock). Too late once a backup's service has committed it, or once a restore has
   * written and flushed the whole volume: that job succeeds. Idempotent.
   */
  cancel(reason?: string): void;
  /** Latest progress, in logical bytes. */
  progress(): { bytesDone: number; bytesTotal: number };
}

/** Links an external signal to a new controller, so a job can be cancelled from either side. */
export function linkedController(external?: AbortSignal): AbortController {
  const controller = new AbortController();
  if (external) {
    if (external.aborted) controller.abort(external.reason);
    else external.addEventListener('abort', () => controller.abort(external.reason), { once: true });
  }
  return controller;
}
