/**
 * A fixed set of reusable items (buffers, slots) handed out one at a time. `take` resolves at once
 * when an item is free, else when one is given back, first come first served. The list never
 * creates items: what bounds the memory in use is the number given to the constructor.
 */
export class FreeList<T> {
  private readonly free: T[];
  private readonly waiting: ((item: T) => void)[] = [];

  constructor(items: Iterable<T>) {
    this.free = [...items];
  }

  take(): Promise<T> {
    const item = this.free.pop();
    return item !== undefined ? Promise.resolve(item) : new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Returns an item from `take`; the caller must not use it afterwards. */
  give(item: T): void {
    const next = this.waiting.shift();
    if (next) next(item);
    else this.free.push(item);
  }
}
