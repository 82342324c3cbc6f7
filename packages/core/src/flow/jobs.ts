import { CairnError } from '../errors.js';
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
 * `INVALID_INPUT` (`details.field: 'signal'`) unless `signal` is undefined or an AbortSignal (by
 * its shape: `aborted`, `addEventListener`, `removeEventListener`). A request's signal is checked
 * before anything is taken or written for it (a backup's record and its turn, a restore's claim):
 * linking it to the job later must not fail.
 */
export function assertSignal(signal: unknown): asserts signal is AbortSignal | undefined {
  if (signal === undefined) return;
  const s = signal as Partial<AbortSignal> | null;
  if (typeof s !== 'object' || s === null || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function' || typeof s.removeEventListener !== 'function') {
    throw new CairnError('INVALID_INPUT', 'signal must be an AbortSignal', { details: { field: 'signal', reason: 'not_abort_signal' } });
  }
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
