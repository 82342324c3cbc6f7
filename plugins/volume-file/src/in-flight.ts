/**
 * Counts a device's operations in progress, so that close can wait for them. Once `close` has
 * begun, `run` refuses new operations; `close` resolves when every operation admitted before it —
 * including writes still queued behind a snapshot's write gate — has settled (done or failed).
 */
export class InFlight {
  private count = 0;
  private closing = false;
  private waiters: (() => void)[] = [];

  /** Runs `fn` as one operation; throws `refused()` once `close` has begun. Admits synchronously. */
  async run<T>(fn: () => Promise<T>, refused: () => Error): Promise<T> {
    if (this.closing) throw refused();
    this.count++;
    try {
      return await fn();
    } finally {
      if (--this.count === 0) for (const w of this.waiters.splice(0)) w();
    }
  }

  /** Refuses new operations; resolves once those admitted have settled. Idempotent. */
  close(): Promise<void> {
    this.closing = true;
    if (this.count === 0) return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }
}
