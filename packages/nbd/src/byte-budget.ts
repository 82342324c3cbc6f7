/**
 * Bytes one connection holds for one purpose (write payloads, read replies), bounded by `limit`
 * with one exception: a grant is always made when nothing is held, so a single request larger
 * than the limit still proceeds (alone) instead of waiting forever. `held` therefore never exceeds
 * max(`limit`, the largest single grant). A grant of 0 bytes is always made.
 */
export class ByteBudget {
  private heldBytes = 0;

  constructor(readonly limit: number) {}

  /** Bytes granted and not yet released. */
  get held(): number {
    return this.heldBytes;
  }

  /** Grants `n` bytes if they fit within the limit, or if nothing is held; false otherwise. */
  tryTake(n: number): boolean {
    if (n > 0 && this.heldBytes > 0 && this.heldBytes + n > this.limit) return false;
    this.heldBytes += n;
    return true;
  }

  /** Returns `n` bytes granted earlier. */
  release(n: number): void {
    this.heldBytes -= n;
  }
}
