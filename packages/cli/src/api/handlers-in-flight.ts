import { CairnError } from '@cairn/core';

/**
 * The route handlers running, each counted from its start until its promise settles, whatever
 * became of its connection: a client gone, or a connection cut at shutdown, does not stop a
 * handler's work on the targets (a delete, an import-record), so the targets must stay open until
 * it ends. `close` refuses every handler that would start from then on (UNAVAILABLE, without
 * running it) and resolves once the running ones have settled.
 */
export class HandlersInFlight {
  private running = 0;
  private closed = false;
  private readonly waiters = new Set<() => void>();

  /** Runs `handler` counted; after `close`, rejects with UNAVAILABLE and does not run it. */
  async run<T>(handler: () => Promise<T>): Promise<T> {
    if (this.closed) throw new CairnError('UNAVAILABLE', 'the server is shutting down');
    this.running++;
    try {
      return await handler();
    } finally {
      this.running--;
      if (this.running === 0) for (const wake of this.waiters) wake();
    }
  }

  /** Refuses later handlers; resolves (never rejects) once no handler runs. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.running === 0) return;
    await new Promise<void>((resolve) => {
      const wake = () => {
        this.waiters.delete(wake);
        resolve();
      };
      this.waiters.add(wake);
    });
  }
}
