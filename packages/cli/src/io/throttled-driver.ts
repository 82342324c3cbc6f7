import type { Attachment, AttachMode, AttachTarget, BlockDevice, ByteRange, Extent, ExtentQuery, VolumeDriver } from '@cairn/core';

/**
 * A view of `driver` whose attached devices read at most `bytesPerSecond` (all devices of the
 * view share one budget). Everything else passes through unchanged, capabilities included.
 * Used by `--read-rate` to keep a backup from starving the volume's other users.
 */
export function throttledDriver(driver: VolumeDriver, bytesPerSecond: number): VolumeDriver {
  const bucket = new RateBudget(bytesPerSecond);
  return new Proxy(driver, {
    get(target, prop) {
      if (prop === 'attach') {
        return async (what: AttachTarget, mode: AttachMode): Promise<Attachment> => {
          const a = await target.attach(what, mode);
          return { ...a, device: new ThrottledDevice(a.device, bucket) };
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Paces reads so that bytes granted never run ahead of `rate` × elapsed time. */
class RateBudget {
  private next = Date.now();
  constructor(private readonly rate: number) {}

  async take(bytes: number): Promise<void> {
    const now = Date.now();
    const start = Math.max(now, this.next);
    this.next = start + (bytes / this.rate) * 1000;
    const wait = start - now;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
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
