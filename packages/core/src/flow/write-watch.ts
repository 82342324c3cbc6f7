import type { BlockDevice, ByteRange, Extent, ExtentQuery } from '../contracts/block-device.js';

/**
 * A device that tells whether anything has been asked to change it: `touched()` is true from the
 * first call of `write` or `writeZeroes` on, set before the call reaches the device (a write that
 * fails may have changed some bytes). Until then the device holds what it held when it was
 * wrapped. Everything else is passed through unchanged. A restore's flow uses it to tell a
 * failure that left the volume as it was from one that began to overwrite it.
 */
export interface WatchedDevice {
  device: BlockDevice;
  touched(): boolean;
}

export function watchWrites(device: BlockDevice): WatchedDevice {
  const watched = new WriteWatchedDevice(device);
  return { device: watched, touched: () => watched.touched };
}

class WriteWatchedDevice implements BlockDevice {
  touched = false;
  constructor(private readonly inner: BlockDevice) {}
  get size() {
    return this.inner.size;
  }
  get mode() {
    return this.inner.mode;
  }
  get extentGranularity() {
    return this.inner.extentGranularity;
  }
  get driverName() {
    return this.inner.driverName;
  }
  read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.inner.read(offset, length, into);
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    this.touched = true;
    return this.inner.write(offset, data);
  }
  writeZeroes(offset: number, length: number): Promise<void> {
    this.touched = true;
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
