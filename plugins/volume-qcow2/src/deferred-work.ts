import { outcomeUnknown } from './outcome.js';

/**
 * Cleanup that could not finish because the daemon did not answer in time, queued per node until
 * the node is used again: qemu may still run the commands the client stopped waiting for (a view's
 * backup job, say), so only a later answer tells what is there to undo. Whoever opens or settles
 * the node under its volume's lock calls `run` first (Runtime.openVolume, Runtime.finishDeferred).
 *
 * Contract for queued work: safe to run again after a failure (idempotent steps), and holding a
 * reference on the node that it drops when done, so the node stays open until then. The queue
 * lives in one daemon session and goes with it: a daemon that exits takes its nodes, jobs and
 * exports along.
 */
export class DeferredWork {
  private readonly queues = new Map<string, Array<() => Promise<void>>>();

  /**
   * Runs `work` now; when it fails with an unknown outcome (see outcomeUnknown), queues it on
   * `node`. The error is thrown either way.
   */
  async attempt(node: string, work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (err) {
      if (outcomeUnknown(err)) this.queues.set(node, [...(this.queues.get(node) ?? []), work]);
      throw err;
    }
  }

  /**
   * Runs the work queued on `node`, oldest first. Work that fails with an unknown outcome stays
   * queued (the daemon still does not answer) and its error is thrown; work that fails otherwise
   * is dropped, and its error thrown.
   */
  async run(node: string): Promise<void> {
    const queue = this.queues.get(node);
    while (queue?.length) {
      try {
        await queue[0]!();
      } catch (err) {
        if (!outcomeUnknown(err)) queue.shift();
        throw err;
      }
      queue.shift();
    }
    this.queues.delete(node);
  }

  /** Forgets the work of a node that was closed. */
  drop(node: string): void {
    this.queues.delete(node);
  }
}
