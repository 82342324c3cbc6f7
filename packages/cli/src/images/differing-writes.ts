import { isZero, PassThroughDevice, throwIfAborted, type BlockDevice } from '@cairn/core';
import { dataRanges } from './device-data.js';

/** Bytes compared per device read when zeroing a range. */
const STEP = 4 * 1024 * 1024;

/** A device that writes only what differs (differingWrites), and what it wrote. */
export interface DifferingWrites {
  readonly device: BlockDevice;
  /** Bytes written to the underlying device (data that differed; zeros included). */
  readonly bytesWritten: number;
}

/**
 * Writes to `device` the blocks of `want` (the wanted bytes at `offset`) that differ from
 * `current` (what the device holds there, as long as `want`), blocks being of the device's
 * `extentGranularity`, cut at its multiples: runs of adjacent differing blocks of one kind go out
 * as one `write` (data) or `writeZeroes` (blocks that must become zero). Returns the bytes written.
 */
export async function writeDiffering(device: BlockDevice, offset: number, want: Buffer, current: Buffer): Promise<number> {
  const unit = device.extentGranularity;
  let written = 0;
  let run: { start: number; end: number; zero: boolean } | undefined;
  const flush = async (): Promise<void> => {
    if (!run) return;
    if (run.zero) await device.writeZeroes(offset + run.start, run.end - run.start);
    else await device.write(offset + run.start, want.subarray(run.start, run.end));
    written += run.end - run.start;
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
  return written;
}

/**
 * Wraps `device` so that `write` and `writeZeroes` touch only the blocks (writeDiffering) whose
 * bytes differ from what the device holds: the volume's changed-block tracking then marks exactly
 * what changed, as `writeImageToDevice` does for raw images. `write` reads the range first;
 * `writeZeroes` reads and compares only the parts the device's allocated extents say may hold
 * data (dataRanges): holes and zero extents already read as zeros and cost neither a read nor a
 * write, so zeroing a mostly sparse volume costs its data, not its size. Calls on overlapping
 * ranges must not be in flight at once (an NBD client gets no ordering for those either).
 * Everything else passes through. Once `signal` is aborted, `write` and `writeZeroes` fail with
 * `CANCELLED` (checked before each call and each STEP of data a `writeZeroes` compares; it may
 * span the whole volume).
 */
export function differingWrites(device: BlockDevice, signal?: AbortSignal): DifferingWrites {
  const wrapped = new DifferingWritesDevice(device, signal);
  return {
    device: wrapped,
    get bytesWritten() {
      return wrapped.bytesWritten;
    },
  };
}

class DifferingWritesDevice extends PassThroughDevice {
  bytesWritten = 0;
  /**
   * Adds `n` once the write it counts has ended. Never `this.bytesWritten += await …`: that reads
   * the total before the await, so calls in flight at once (an NBD client's, `qemu-img convert
   * -W`) would each add to a stale total and lose the others' bytes.
   */
  private count(n: number): void {
    this.bytesWritten += n;
  }
  private readonly zeros = Buffer.alloc(STEP);
  constructor(
    inner: BlockDevice,
    private readonly signal?: AbortSignal,
  ) {
    super(inner);
  }
  override async write(offset: number, data: Uint8Array): Promise<void> {
    throwIfAborted(this.signal, 'image');
    const want = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.count(await writeDiffering(this.inner, offset, want, await this.inner.read(offset, want.length)));
  }
  override async writeZeroes(offset: number, length: number): Promise<void> {
    throwIfAborted(this.signal, 'image');
    for (const r of await dataRanges(this.inner, { offset, length })) {
      for (let at = r.offset, end = r.offset + r.length; at < end; at += STEP) {
        throwIfAborted(this.signal, 'image');
        const n = Math.min(STEP, end - at);
        this.count(await writeDiffering(this.inner, at, this.zeros.subarray(0, n), await this.inner.read(at, n)));
      }
    }
  }
}
