/**
 * Lets writes run concurrently, and lets one `exclusive` section (a snapshot) run with no write
 * in flight: new writes wait until it ends. In-process only.
 */
export class WriteGate {
  private inflight = 0;
  private paused: Promise<void> | undefined;
  private drained: (() => void) | undefined;

  /** Runs a write; waits while an exclusive section runs. */
  async write<T>(fn: () => Promise<T>): Promise<T> {
    while (this.paused) await this.paused;
    this.inflight++;
    try {
      return await fn();
    } finally {
      this.inflight--;
      if (this.inflight === 0) this.drained?.();
    }
  }

  /** Runs `fn` once every write in flight has finished, holding new writes back meanwhile. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.paused) await this.paused;
    let reopen!: () => void;
    this.paused = new Promise<void>((r) => (reopen = r));
    try {
      if (this.inflight > 0) await new Promise<void>((r) => (this.drained = r));
      return await fn();
    } finally {
      this.drained = undefined;
      this.paused = undefined;
      reopen();
    }
  }
}
