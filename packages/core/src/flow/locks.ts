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
    const release = await this.mutex.acquire(`volume:${volumeId}`, signal, 'the volume');
    return async () => release();
  }
}
