import type { KeyedMutex } from '@cairn/core';
import type { DaemonSession } from './daemon-session.js';

/** Deferred work is retried at most this many command timeouts apart (the I/O timeout). */
const RETRY_CAP_FACTOR = 10;

/**
 * The timer that runs the work deferred in ONE daemon session (DeferredWork) without waiting for
 * a use of its nodes, so a volume nobody uses again does not keep its node, view or export — nor
 * the image's lock — for the daemon's lifetime. Each session has its own (Runtime makes one per
 * session): a session's retry state never holds back, nor is reset by, another session's work.
 *
 * A retry runs one command timeout after work was queued, then twice as long after each retry
 * that left work queued, up to the I/O timeout (10 command timeouts): a stalled daemon is not
 * flooded, and one that answers again is cleaned up within that bound. Each node's work runs
 * under its volume's lock, like any structural change, and only if the session is still alive
 * and the retry not stopped once that lock is held (a dead session's work is never run: its
 * daemon took its nodes along, and its names may be reused by the next session). Errors stay with
 * the work (the next use of the node reports them). Stops for good with `stop()` (the daemon's
 * exit, or the driver's close).
 */
export class DeferredRetry {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private failures = 0;
  private stopped = false;

  constructor(
    private readonly session: DaemonSession,
    private readonly locks: KeyedMutex,
    private readonly commandTimeoutMs: number,
  ) {}

  /** Arms the timer unless it is armed, a retry runs (it re-arms when it ends), or the retry stopped. */
  schedule(): void {
    if (this.timer || this.running || this.done) return;
    const delay = this.commandTimeoutMs * Math.min(2 ** this.failures, RETRY_CAP_FACTOR);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.retry();
    }, delay);
    this.timer.unref(); // never keeps the process alive by itself
  }

  /** Stops for good: no timer, and a retry waiting for a lock does not run its work. Idempotent. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private get done(): boolean {
    return this.stopped || !this.session.alive;
  }

  private async retry(): Promise<void> {
    this.running = true;
    let failed = false;
    try {
      for (const { node, volumeId } of this.session.deferred.pending()) {
        if (this.done) return;
        await this.locks
          .run(volumeId, async () => {
            if (!this.done) await this.session.deferred.run(node); // checked again: the daemon may have died while this waited
          })
          .catch(() => (failed = true));
      }
    } finally {
      this.running = false;
    }
    if (this.done) return;
    this.failures = failed ? this.failures + 1 : 0;
    if (this.session.deferred.pending().length) this.schedule();
  }
}
