import type { KeyedMutex } from '@cairn/core';
import type { DaemonSession } from './daemon-session.js';

/** Deferred work is retried at most this many command timeouts apart (the I/O timeout). */
const RETRY_CAP_FACTOR = 10;

/** One node's retry state: when its work is next due, and how many retries in a row left it queued. */
interface NodeRetry {
  due: number;
  failures: number;
}

/**
 * The timer that runs the work deferred in ONE daemon session (DeferredWork) without waiting for
 * a use of its nodes, so a volume nobody uses again does not keep its node, view or export — nor
 * the image's lock — for the daemon's lifetime. Each session has its own (Runtime makes one per
 * session): a session's retry state never holds back, nor is reset by, another session's work.
 *
 * Per node: a retry runs one command timeout after work was queued on a node that had none, then
 * twice as long after each retry that left it queued, up to the I/O timeout (10 command
 * timeouts): a stalled daemon is not flooded, and one that answers again is cleaned up within
 * that bound. Nodes back off independently: a node that keeps failing never delays another
 * node's first retry (one timer, armed for the earliest node due). Each node's work runs under
 * its volume's lock, like any structural change, and only if the session is still alive and the
 * retry not stopped once that lock is held (a dead session's work is never run: its daemon took
 * its nodes along, and its names may be reused by the next session). Errors stay with the work
 * (the next use of the node reports them). Stops for good with `stop()` (the daemon's exit, or
 * the driver's close).
 */
export class DeferredRetry {
  private timer: NodeJS.Timeout | undefined;
  /** When the armed timer fires (epoch ms). */
  private timerAt = Infinity;
  /** Nodes whose retry runs (waits for its volume's lock, or runs its work). */
  private readonly inFlight = new Set<string>();
  private stopped = false;
  private readonly nodes = new Map<string, NodeRetry>();

  constructor(
    private readonly session: DaemonSession,
    private readonly locks: KeyedMutex,
    private readonly commandTimeoutMs: number,
  ) {}

  /**
   * Work was queued on `node` (DeferredWork.onQueued): a node without queued work before (`fresh`),
   * or not known here, is due one command timeout from now; a node already waiting keeps its due
   * time and backoff. Arms the timer for the earliest node due, unless the retry stopped.
   */
  schedule(node: string, fresh: boolean): void {
    if (this.done) return;
    if (fresh || !this.nodes.has(node)) this.nodes.set(node, { due: Date.now() + this.commandTimeoutMs, failures: 0 });
    this.arm();
  }

  /** Stops for good: no timer, and a retry waiting for a lock does not run its work. Idempotent. */
  stop(): void {
    this.stopped = true;
    this.disarm();
  }

  private get done(): boolean {
    return this.stopped || !this.session.alive;
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  /** Arms (or brings forward) the timer for the earliest node due whose retry does not run already. */
  private arm(): void {
    if (this.done) return;
    const next = Math.min(...[...this.nodes].filter(([node]) => !this.inFlight.has(node)).map(([, n]) => n.due));
    if (next === Infinity || (this.timer && this.timerAt <= next)) return;
    this.disarm();
    this.timerAt = next;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.retry();
    }, Math.max(0, next - Date.now()));
    this.timer.unref(); // never keeps the process alive by itself
  }

  /**
   * Starts the retry of every node due that is not being retried already, each on its own, under
   * its own volume's lock: a volume whose lock a long call holds (a detach's flush) delays only its
   * own nodes, and the timer is armed again at once for the others.
   */
  private retry(): void {
    if (this.done) return;
    // Nodes whose work is gone (run by a use, or the node was closed) are forgotten; any other
    // queued node is known (a node queued while a retry ran, say).
    const pending = this.session.deferred.pending();
    const queued = new Set(pending.map((p) => p.node));
    for (const node of this.nodes.keys()) if (!queued.has(node) && !this.inFlight.has(node)) this.nodes.delete(node);
    for (const { node, volumeId } of pending) {
      if (this.inFlight.has(node)) continue;
      const state = this.nodes.get(node) ?? { due: Date.now(), failures: 0 };
      this.nodes.set(node, state);
      if (state.due > Date.now()) continue;
      this.inFlight.add(node);
      void this.retryNode(node, volumeId, state);
    }
    this.arm();
  }

  private async retryNode(node: string, volumeId: string, state: NodeRetry): Promise<void> {
    let failed = false;
    await this.locks
      .run(volumeId, async () => {
        if (!this.done) await this.session.deferred.run(node); // checked again: the daemon may have died while this waited
      })
      .catch(() => (failed = true));
    this.inFlight.delete(node);
    if (failed) {
      state.failures += 1;
      state.due = Date.now() + this.commandTimeoutMs * Math.min(2 ** state.failures, RETRY_CAP_FACTOR);
    } else if (this.nodes.get(node) === state) {
      // Done; work queued on the node since (schedule kept this state) is due one command timeout from now.
      if (this.session.deferred.pending().some((p) => p.node === node)) Object.assign(state, { due: Date.now() + this.commandTimeoutMs, failures: 0 });
      else this.nodes.delete(node);
    }
    this.arm();
  }
}
