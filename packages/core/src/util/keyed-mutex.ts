import { CairnError, cancelledError } from '../errors.js';
import { assertSignal } from './validate.js';

/**
 * In-process mutual exclusion by key. Waiters are served in arrival order.
 * `acquire` resolves to a release function; calling it twice is harmless. A waiter given a
 * `signal` that aborts before its turn rejects with `CANCELLED` (the signal's reason when that is
 * a CANCELLED CairnError) and passes its turn on at once when it comes. A `signal` that is not an
 * AbortSignal is `INVALID_INPUT` (`details.field: 'signal'`, assertSignal) before any turn is
 * queued, and an acquire that throws leaves no turn queued: later acquires of the key never wait
 * on it.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async acquire(key: string, signal?: AbortSignal, waitingFor = key): Promise<() => void> {
    assertSignal(signal);
    if (signal?.aborted) throw cancelledError(signal, { message: `cancelled while waiting for ${waitingFor}` });
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => current);
    this.tails.set(key, tail);
    let released = false;
    const releaseOnce = (): void => {
      if (released) return;
      released = true;
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
    if (!signal) {
      await previous;
      return releaseOnce;
    }
    return new Promise((resolve, reject) => {
      let gaveUp = false;
      const onAbort = (): void => {
        gaveUp = true;
        reject(cancelledError(signal, { message: `cancelled while waiting for ${waitingFor}` }));
      };
      try {
        signal.addEventListener('abort', onAbort, { once: true });
      } catch (err) {
        // Shaped like a signal but refusing a listener: bad input, and its turn passes on when it
        // comes (released now, the key would no longer wait for the turns queued before it).
        void previous.then(releaseOnce);
        throw new CairnError('INVALID_INPUT', 'signal must be an AbortSignal', { cause: err, details: { field: 'signal', reason: 'not_abort_signal' } });
      }
      void previous.then(() => {
        signal.removeEventListener('abort', onAbort);
        if (gaveUp) releaseOnce();
        else resolve(releaseOnce);
      });
    });
  }

  /** True while someone holds or waits for `key`. */
  isLocked(key: string): boolean {
    return this.tails.has(key);
  }

  /** Runs `fn` holding `key` (waiting for it as `acquire` does). */
  async run<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(key, signal);
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
