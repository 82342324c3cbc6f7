import { CairnError, toCairnError } from '@cairn/core';

interface Queue {
  /** The volume whose lock serializes the node's work (its structural changes take it too). */
  volumeId: string;
  work: Array<() => Promise<void>>;
}

/**
 * Cleanup of a node that did not finish (a view's teardown, say), queued per node until it does.
 *
 * Rule: queued work stays queued until it succeeds, whatever the failure. Its steps count "no
 * such job/node/bitmap" (NOT_FOUND) as done, so an error that reaches this queue means the thing
 * is still there, or may be: no reply (the daemon stalls, and may still run what it was sent), or
 * a definite refusal (qemu answered with an error, e.g. CONFLICT while something still uses the
 * node). Dropping the work would leave what it was to remove — and the node reference it holds —
 * until the daemon stops. Failures are reported, never swallowed: `attempt` and `run` throw them.
 *
 * When it runs again, always under the volume's lock: before the node's next use (Runtime.openVolume,
 * Runtime.finishDeferred, DaemonSession.openNode, whose call fails with the work's error while it
 * still fails; openVolume and the driver's holds run all the volume's work, Runtime.finishPending),
 * and without a use, on a timer while the daemon runs (the session's DeferredRetry, told by `onQueued`), each node's retries further apart (the bound: at most one attempt per node
 * per retry interval, capped, never a loop).
 *
 * Contract for queued work: safe to run again after any failure (idempotent steps), and either
 * holding a reference on the node that it drops when done, so the node stays open until then, or
 * being the node's close itself (DaemonSession.releaseNode), or the release of a node outside the
 * volume nodes (holdImage). The queue lives in one daemon session and goes with it: a daemon that
 * exits (a clean `quit` included) takes its nodes, jobs and exports along, and its queued work is
 * never run after that.
 */
export class DeferredWork {
  private readonly queues = new Map<string, Queue>();
  private listener: ((node: string, fresh: boolean) => void) | undefined;

  constructor(private readonly driver: string) {}

  /**
   * Registers the one callback told when work was queued on `node` (the owner schedules its retry);
   * `fresh` when the node had no work queued before (its retry starts over).
   */
  onQueued(listener: (node: string, fresh: boolean) => void): void {
    this.listener = listener;
  }

  /** Runs `work` now; when it fails, for any reason, queues it on `node` and throws the error. */
  async attempt(node: string, volumeId: string, work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (err) {
      const queue = this.queues.get(node) ?? { volumeId, work: [] };
      const fresh = queue.work.length === 0;
      queue.work.push(work);
      this.queues.set(node, queue);
      this.listener?.(node, fresh);
      throw err;
    }
  }

  /**
   * Runs the work queued on `node`, oldest first, stopping at the first failure: that work stays
   * queued (with everything after it) and its error is thrown, with its code and details, as
   * work left over on the node. Callers hold the node's volume lock.
   */
  async run(node: string): Promise<void> {
    const queue = this.queues.get(node);
    while (queue?.work.length) {
      try {
        await queue.work[0]!();
      } catch (err) {
        const e = toCairnError(err, this.driver, 'cleanup');
        const why = e.message.replace(/^\[[^\]]*\] /, '');
        throw new CairnError(e.code, `cleanup left on node ${node} by an earlier call failed (it stays queued): ${why}`, {
          driver: this.driver,
          cause: err,
          ...(e.details ? { details: e.details } : {}),
        });
      }
      queue.work.shift();
    }
    if (queue && this.queues.get(node) === queue) this.queues.delete(node);
  }

  /** Nodes with queued work, each with its volume (the lock to take to run it). */
  pending(): Array<{ node: string; volumeId: string }> {
    return [...this.queues].filter(([, q]) => q.work.length > 0).map(([node, q]) => ({ node, volumeId: q.volumeId }));
  }

  /** Forgets the work of a node that was closed. */
  drop(node: string): void {
    this.queues.delete(node);
  }
}
