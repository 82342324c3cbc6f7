import type { BlockDevice } from '../contracts/block-device.js';
import { PassThroughDevice } from '../util/pass-through-device.js';

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

class WriteWatchedDevice extends PassThroughDevice {
  touched = false;
  override write(offset: number, data: Uint8Array): Promise<void> {
    this.touched = true;
    return this.inner.write(offset, data);
  }
  override writeZeroes(offset: number, length: number): Promise<void> {
    this.touched = true;
    return this.inner.writeZeroes(offset, length);
  }
}
