import { KeyedMutex } from '../util/keyed-mutex.js';

/**
 * Serializes flows on one volume. The default is in-process; a repository-backed provider makes
 * the same promise across processes.
 */
export interface VolumeLocks {
  /** Waits for and takes the lock on `volumeId`; resolves to an idempotent release. */
  acquire(volumeId: string, signal?: AbortSignal): Promise<() => Promise<void>>;
}

export class InProcessVolumeLocks implements VolumeLocks {
  private readonly mutex = new KeyedMutex();

  async acquire(volumeId: string): Promise<() => Promise<void>> {
    const release = await this.mutex.acquire(`volume:${volumeId}`);
    return async () => release();
  }
}
