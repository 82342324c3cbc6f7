import { cancelledError } from '../errors.js';
import { KeyedMutex } from '../util/keyed-mutex.js';

/**
 * The order of one manager's backup requests per volume. A request takes its turn when it is made
 * (synchronously, before its first await); its job waits for the turn before it waits for the
 * volume's lock, and passes it on once it holds the lock. So the jobs of requests made one after
 * the other, at once too, queue for the lock, and run, in request order, whatever order their
 * requests' checks and catalog writes finish in and whatever order the VolumeLocks provider keeps.
 */
export class RequestOrder {
  private readonly turns = new KeyedMutex();

  /** Takes the next turn on `volumeId`, now: it comes once every earlier turn on it has been passed. */
  take(volumeId: string): Turn {
    const coming = this.turns.acquire(volumeId);
    let passed = false;
    const pass = (): void => {
      if (passed) return;
      passed = true;
      void coming.then((release) => release());
    };
    const wait = (signal: AbortSignal): Promise<void> =>
      new Promise((resolve, reject) => {
        const onAbort = (): void => {
          pass();
          reject(cancelledError(signal, { message: 'cancelled while waiting for its turn', keep: 'any' }));
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        void coming.then(() => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    return { wait, pass };
  }
}

/** One request's place in its volume's RequestOrder. */
export interface Turn {
  /**
   * Resolves once the turn has come. When `signal` fires first (or has fired), rejects at once with
   * its reason (a CairnError; CANCELLED when it is none) and passes the turn, which then delays no one.
   */
  wait(signal: AbortSignal): Promise<void>;
  /** Passes the turn on: at once when it has come, else as soon as it comes. Idempotent. */
  pass(): void;
}
