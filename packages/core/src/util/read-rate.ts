import type { BlockDevice } from '../contracts/block-device.js';
import { PassThroughDevice } from './pass-through-device.js';
import { cancelledError, throwIfAborted } from '../errors.js';

/**
 * Paces reads so that the bytes granted never run ahead of `bytesPerSecond` × the time elapsed
 * since the first. Shared by every device throttled with it (one budget for several backups).
 */
export class RateBudget {
  private next = Date.now();
  constructor(readonly bytesPerSecond: number) {}

  /**
   * Resolves once `bytes` more may be read. With `signal`, an abort ends the wait at once with
   * `CANCELLED` (and gives the grant back when no later one was made), so a throttled job stops
   * as soon as it is cancelled however slow its rate.
   */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    throwIfAborted(signal);
    const now = Date.now();
    const start = Math.max(now, this.next);
    const end = start + (bytes / this.bytesPerSecond) * 1000;
    this.next = end;
    const wait = start - now;
    if (wait <= 0) return;
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        if (this.next === end) this.next = start;
        reject(cancelledError(signal!, { message: 'throttled read cancelled' }));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, wait);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/**
 * `device` with its reads paced by `budget`; writes, extents and the rest pass through. Keeps a
 * backup from starving the volume's other users (`BackupRequest.readRate`,
 * `BackupManagerOptions.readRate`). A read waiting for its grant fails with `CANCELLED` once
 * `signal` aborts.
 */
export function throttleReads(device: BlockDevice, budget: RateBudget, signal?: AbortSignal): BlockDevice {
  return new ThrottledDevice(device, budget, signal);
}

class ThrottledDevice extends PassThroughDevice {
  constructor(
    inner: BlockDevice,
    private readonly budget: RateBudget,
    private readonly signal?: AbortSignal,
  ) {
    super(inner);
  }
  override async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    await this.budget.take(length, this.signal);
    return this.inner.read(offset, length, into);
  }
}
