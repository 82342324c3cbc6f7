/** What the per-request bound keeps on each request in flight. */
export interface HeldRequest {
  /** `now()` when the request was written. */
  sentAt: number;
  /**
   * `now()` from which its clock runs: the latest of its sending, the moment every request sent
   * before it had been answered or had a chunk of its reply arrive, and the arrival of the latest
   * chunk of its own reply. Meaningful only while the clock runs.
   */
  heldSince: number;
  /** A chunk of its reply (not the last) has arrived. */
  replying: boolean;
  /** The list holding it and its neighbours there; kept by `PerRequestBound` only. */
  heldIn?: HeldList | undefined;
  heldPrev?: HeldRequest | undefined;
  heldNext?: HeldRequest | undefined;
}

/** An intrusive doubly linked list of requests: every operation O(1), nothing allocated. */
class HeldList {
  first: HeldRequest | undefined;
  private last: HeldRequest | undefined;

  push(r: HeldRequest): void {
    r.heldIn = this;
    r.heldPrev = this.last;
    r.heldNext = undefined;
    if (this.last) this.last.heldNext = r;
    else this.first = r;
    this.last = r;
  }

  remove(r: HeldRequest): void {
    if (r.heldPrev) r.heldPrev.heldNext = r.heldNext;
    else this.first = r.heldNext;
    if (r.heldNext) r.heldNext.heldPrev = r.heldPrev;
    else this.last = r.heldPrev;
    r.heldIn = r.heldPrev = r.heldNext = undefined;
  }

  clear(): void {
    for (let r = this.first; r; ) {
      const next = r.heldNext;
      r.heldIn = r.heldPrev = r.heldNext = undefined;
      r = next;
    }
    this.first = this.last = undefined;
  }
}

/**
 * Bookkeeping for the per-request bound of `NbdConnectOptions.requestTimeoutMs`: which requests in
 * flight have a running clock, since when, and which has been held longest. A request's clock
 * waits while a request sent before it has neither been answered nor had a chunk of its reply
 * arrive (the server may have it queued behind that one), and runs from then on. Every method is
 * O(1), `answered` and `chunk` amortised (each request starts its clock once); nothing is
 * allocated per request.
 */
export class PerRequestBound<R extends HeldRequest> {
  /** Requests whose clock runs, in `heldSince` order (each is added or moved at `now()`, which never decreases). */
  private readonly running = new HeldList();
  /** Requests whose clock waits, in send order: all were sent after `gate`. */
  private readonly waiting = new HeldList();
  /** The oldest request in flight without a chunk of its reply; undefined when there is none (then `waiting` is empty). */
  private gate: R | undefined;

  /** `r` was just sent, after every request already added (`heldSince` = `sentAt`, `replying` false). */
  sent(r: R): void {
    if (this.gate) {
      this.waiting.push(r);
    } else {
      this.running.push(r);
      this.gate = r;
    }
  }

  /**
   * A chunk of the reply to `r`, not the last, arrived at `at`. The client passes only chunks that
   * count as progress: an error chunk after the first of a reply restarts no clock.
   */
  chunk(r: R, at: number): void {
    r.replying = true;
    r.heldSince = at;
    if (r.heldIn === this.running) {
      this.running.remove(r);
      this.running.push(r);
    }
    if (r === this.gate) this.openGate(at);
  }

  /** The reply to `r` is complete (at `at`); `r` leaves the bound. */
  answered(r: R, at: number): void {
    r.heldIn?.remove(r);
    if (r === this.gate) this.openGate(at);
  }

  /** The request whose clock has run longest (earliest `heldSince`), if any clock runs. */
  longestHeld(): R | undefined {
    return this.running.first as R | undefined;
  }

  clear(): void {
    this.running.clear();
    this.waiting.clear();
    this.gate = undefined;
  }

  /** The gate got a chunk or its reply: start the clocks of the waiting requests up to the next one without a chunk, which becomes the gate. */
  private openGate(at: number): void {
    this.gate = undefined;
    for (let r = this.waiting.first as R | undefined; r; r = this.waiting.first as R | undefined) {
      this.waiting.remove(r);
      r.heldSince = at;
      this.running.push(r);
      if (!r.replying) {
        this.gate = r;
        return;
      }
    }
  }
}
