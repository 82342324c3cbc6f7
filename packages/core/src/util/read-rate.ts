import type { BlockDevice, ByteRange, Extent, ExtentQuery } from '../contracts/block-device.js';

/**
 * Paces reads so that the bytes granted never run ahead of `bytesPerSecond` × the time elapsed
 * since the first. Shared by every device throttled with it (one budget for several backups).
 */
export class RateBudget {
  private next = Date.now();
  constructor(readonly bytesPerSecond: number) {}

  /** Resolves once `bytes` more may be read. */
  async take(bytes: number): Promise<void> {
    const now = Date.now();
    const start = Math.max(now, this.next);
    this.next = start + (bytes / this.bytesPerSecond) * 1000;
    const wait = start - now;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}

/**
 * `device` with its reads paced by `budget`; writes, extents and the rest pass through. Keeps a
 * backup from starving the volume's other users (`BackupRequest.readRate`, `--read-rate`).
 */
export function throttleReads(device: BlockDevice, budget: RateBudget): BlockDevice {
  return new ThrottledDevice(device, budget);
}

class ThrottledDevice implements BlockDevice {
  constructor(
    private readonly inner: BlockDevice,
    private readonly budget: RateBudget,
  ) {}
  get size() {
    return this.inner.size;
  }
  get mode() {
    return this.inner.mode;
  }
  get extentGranularity() {
    return this.inner.extentGranularity;
  }
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    await this.budget.take(length);
    return this.inner.read(offset, length, into);
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.inner.write(offset, data);
  }
  writeZeroes(offset: number, length: number): Promise<void> {
    return this.inner.writeZeroes(offset, length);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  extents(query: ExtentQuery, range?: ByteRange): Promise<Extent[]> {
    return this.inner.extents(query, range);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
