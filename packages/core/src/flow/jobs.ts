import { CairnError } from '../errors.js';
import { assertSignal } from '../util/validate.js';
import type { BackupRecord } from '../contracts/records.js';
import type { JobQueuePlace } from './job-waits.js';

export { assertSignal };

export type JobKind = 'backup' | 'restore';
export type { JobQueuePlace };

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
   * volume's lock or for a place among the data jobs, `queued()`: before it has read or written
   * the volume). Too late once a backup's service has committed it, or once a restore has
   * written and flushed the whole volume: that job succeeds. Idempotent.
   */
  cancel(reason?: string): void;
  /** Latest progress, in logical bytes. */
  progress(): { bytesDone: number; bytesTotal: number };
  /**
   * While the job waits before it runs, what for and its place (JobQueuePlace): behind another
   * backup or restore of its volume that its manager runs, or for a place among the manager's
   * data jobs (BackupManagerOptions.maxDataJobs); undefined while it runs and once it has ended.
   * A job comes to its first wait within microtasks of its start, with no I/O between: undefined
   * before that, it shows its wait to a caller that has let the event loop turn once since.
   * Always present on a BackupManager's jobs (optional so that a front end's test doubles still type).
   */
  queued?(): JobQueuePlace | undefined;
}

/** A job's controller, linked to a caller's signal until `unlink()`. */
export interface LinkedController {
  readonly signal: AbortSignal;
  abort(reason?: unknown): void;
  /**
   * Removes the listener on the caller's signal (idempotent): called once the job has ended, so a
   * long-lived signal (a server's) keeps no listener, nor the job's state, per job it ever ran.
   */
  unlink(): void;
}

/**
 * Links an external signal to a new controller, so a job can be cancelled from either side: the
 * external signal's abort (its reason) aborts the controller until `unlink()`. `INVALID_INPUT`
 * for an external signal that is not an AbortSignal (assertSignal).
 */
export function linkedController(external?: AbortSignal): LinkedController {
  assertSignal(external);
  const controller = new AbortController();
  const abort = (reason?: unknown): void => controller.abort(reason);
  if (!external) return { signal: controller.signal, abort, unlink: () => undefined };
  const onAbort = (): void => controller.abort(external.reason);
  if (external.aborted) onAbort();
  else external.addEventListener('abort', onAbort, { once: true });
  return { signal: controller.signal, abort, unlink: () => external.removeEventListener('abort', onAbort) };
}
