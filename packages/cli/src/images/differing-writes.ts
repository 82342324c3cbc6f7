import { throwIfAborted, type BlockDevice } from '@cairn/core';
import { isZero } from './image-copy.js';

/** Bytes compared per device read when zeroing a range. */
const STEP = 4 * 1024 * 1024;

/** A device that writes only what differs (differingWrites), and what it wrote. */
export interface DifferingWrites {
  readonly device: BlockDevice;
  /** Bytes written to the underlying device (data that differed; zeros included). */
  readonly bytesWritten: number;
}

/**
 * Wraps `device` so that `write` and `writeZeroes` touch only the blocks (of the device's
 * `extentGranularity`, cut at its multiples) whose bytes differ from what the device holds: the
 * volume's changed-block tracking then marks exactly what changed, as `writeImageToDevice` does
 * for raw images. Each call reads the range first; runs of adjacent differing blocks of one kind
 * go out as one `write` (data) or `writeZeroes` (blocks that must become zero). Calls on
 * overlapping ranges must not be in flight at once (an NBD client gets no ordering for those
 * either). Everything else passes through. Once `signal` is aborted, `write` and `writeZeroes`
 * fail with `CANCELLED` (checked before each call and each STEP of a `writeZeroes`, which may
 * span the whole volume).
 */
export function differingWrites(device: BlockDevice, signal?: AbortSignal): DifferingWrites {
  const unit = device.extentGranularity;
  let bytesWritten = 0;
  /** Writes the blocks of `want` (the wanted bytes at `offset`) that differ from `current`. */
  const apply = async (offset: number, want: Buffer, current: Buffer): Promise<void> => {
    let run: { start: number; end: number; zero: boolean } | undefined;
    const flush = async (): Promise<void> => {
      if (!run) return;
      if (run.zero) await device.writeZeroes(offset + run.start, run.end - run.start);
      else await device.write(offset + run.start, want.subarray(run.start, run.end));
      bytesWritten += run.end - run.start;
      run = undefined;
    };
    for (let b = 0; b < want.length; ) {
      const n = Math.min(unit - ((offset + b) % unit), want.length - b);
      const w = want.subarray(b, b + n);
      if (w.equals(current.subarray(b, b + n))) {
        await flush();
      } else {
        const zero = isZero(w);
        if (run && run.zero === zero) run.end = b + n;
        else {
          await flush();
          run = { start: b, end: b + n, zero };
        }
      }
      b += n;
    }
    await flush();
  };
  const zeros = Buffer.alloc(STEP);
  const wrapped: BlockDevice = {
    get size() {
      return device.size;
    },
    get mode() {
      return device.mode;
    },
    get driverName() {
      return device.driverName;
    },
    get extentGranularity() {
      return device.extentGranularity;
    },
    read: (offset, length, into) => device.read(offset, length, into),
    async write(offset, data) {
      throwIfAborted(signal, 'image');
      const want = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      await apply(offset, want, await device.read(offset, want.length));
    },
    async writeZeroes(offset, length) {
      for (let at = offset, end = offset + length; at < end; at += STEP) {
        throwIfAborted(signal, 'image');
        const n = Math.min(STEP, end - at);
        await apply(at, zeros.subarray(0, n), await device.read(at, n));
      }
    },
    flush: () => device.flush(),
    extents: (query, range) => device.extents(query, range),
    close: () => device.close(),
  };
  return {
    device: wrapped,
    get bytesWritten() {
      return bytesWritten;
    },
  };
}
