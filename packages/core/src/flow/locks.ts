import { CairnError, isCairnError } from '../errors.js';
import { KeyedMutex } from '../util/keyed-mutex.js';

/**
 * Serializes flows on one volume. The default is in-process; a repository-backed provider makes
 * the same promise across processes.
 */
export interface VolumeLocks {
  /**
   * Waits for and takes the lock on `volumeId`; resolves to an idempotent release. When `signal`
   * fires while it waits (or has fired already), it rejects at once with `CANCELLED` and never
   * takes the lock: a cancelled waiter leaves the queue and delays no one behind it.
   */
  acquire(volumeId: string, signal?: AbortSignal): Promise<() => Promise<void>>;
}

export class InProcessVolumeLocks implements VolumeLocks {
  private readonly mutex = new KeyedMutex();

  async acquire(volumeId: string, signal?: AbortSignal): Promise<() => Promise<void>> {
    if (signal?.aborted) throw cancelled(signal);
    const pending = this.mutex.acquire(`volume:${volumeId}`);
    if (!signal) {
      const release = await pending;
      return async () => release();
    }
    return new Promise((resolve, reject) => {
      let gaveUp = false;
      const onAbort = () => {
        gaveUp = true;
        reject(cancelled(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      void pending.then((release) => {
        signal.removeEventListener('abort', onAbort);
        // KeyedMutex serves its queue in order: a waiter that gave up passes its turn on at once.
        if (gaveUp) release();
        else resolve(async () => release());
      });
    });
  }
}

function cancelled(signal: AbortSignal): CairnError {
  const reason: unknown = signal.reason;
  return isCairnError(reason) && reason.code === 'CANCELLED' ? reason : new CairnError('CANCELLED', 'cancelled while waiting for the volume', { cause: reason });
}
