import { cancelledError } from '../errors.js';

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

  /** Items free now (not taken, or given back). */
  get available(): number {
    return this.free.length;
  }

  /**
   * An item. With `signal`, an abort while waiting rejects with `CANCELLED` and takes nothing (an
   * item given back later goes to the next taker); an item free at once is taken whatever the signal.
   */
  take(signal?: AbortSignal): Promise<T> {
    const item = this.free.pop();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve, reject) => {
      if (!signal) {
        this.waiting.push(resolve);
        return;
      }
      const onAbort = (): void => {
        const at = this.waiting.indexOf(got);
        if (at >= 0) this.waiting.splice(at, 1);
        reject(cancelledError(signal));
      };
      const got = (x: T): void => {
        signal.removeEventListener('abort', onAbort);
        resolve(x);
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(got);
    });
  }

  /** Returns an item from `take`; the caller must not use it afterwards. */
  give(item: T): void {
    const next = this.waiting.shift();
    if (next) next(item);
    else this.free.push(item);
  }
}
