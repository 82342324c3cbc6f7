import type { BlockDevice, ByteRange, Extent, ExtentQuery } from '../contracts/block-device.js';

/**
 * A BlockDevice that forwards every property and call to `inner`, unchanged: the base of devices
 * that wrap another to add one thing (pace its reads, watch its writes, write only what differs),
 * overriding only the calls they change. Whatever a subclass does not override keeps `inner`'s
 * contract exactly.
 */
export class PassThroughDevice implements BlockDevice {
  constructor(protected readonly inner: BlockDevice) {}
  get size(): number {
    return this.inner.size;
  }
  get mode(): BlockDevice['mode'] {
    return this.inner.mode;
  }
  get extentGranularity(): number {
    return this.inner.extentGranularity;
  }
  get driverName(): string | undefined {
    return this.inner.driverName;
  }
  read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
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
