/**
 * A bounded window of requests in flight: `acquire` resolves at once while fewer than `limit`
 * slots are taken and otherwise waits (FIFO) for a `release`. This is the client's
 * backpressure: a caller issuing many concurrent requests simply waits its turn.
 */
export class InFlightWindow {
  private taken = 0;
  private peak = 0;
  private readonly waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private idleWaiters: Array<() => void> = [];
  private failure: unknown;

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`window limit must be a positive integer, got ${limit}`);
  }

  /** Slots taken now. */
  get inFlight(): number {
    return this.taken;
  }

  /** Most slots ever taken at once. */
  get peakInFlight(): number {
    return this.peak;
  }

  /** Takes a slot; rejects with the failure once `fail` was called. */
  acquire(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.taken < this.limit) {
      this.take();
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Returns a slot; hands it straight to the oldest waiter, if any. */
  release(): void {
    const next = this.failure === undefined ? this.waiters.shift() : undefined;
    if (next) {
      next.resolve();
      return;
    }
    this.taken--;
    if (this.taken === 0) {
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of idle) f();
    }
  }

  /** Resolves once no slot is taken. */
  idle(): Promise<void> {
    if (this.taken === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Rejects every waiter and every later `acquire` with `err`. Idempotent (first error wins). */
  fail(err: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  private take(): void {
    this.taken++;
    if (this.taken > this.peak) this.peak = this.taken;
  }
}
