import { open, type FileHandle } from 'node:fs/promises';
import { CairnError, throwIfAborted, type BlockDevice } from '@cairn/core';

const MiB = 1024 * 1024;
/** Bytes read per step. */
const STEP = 4 * MiB;

export interface CopyStats {
  /** Logical bytes compared or copied. */
  bytesScanned: number;
  /** Bytes written to the target (data that differed; zeros included). */
  bytesWritten: number;
}

/** Whether every byte of `b` is zero. */
export function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += 8192) {
    const end = Math.min(b.length, i + 8192);
    for (let j = i; j < end; j++) if (b[j] !== 0) return false;
  }
  return true;
}

/**
 * Writes the raw image `file` onto `device`, touching only the blocks (of the device's
 * `extentGranularity`) whose bytes differ, so the volume's changed-block tracking marks exactly
 * what changed. Blocks past the image's end are made zero. `INVALID_INPUT` when the image is
 * larger than the device. With `targetIsZeroed`, zero blocks of the image are not compared.
 * `CANCELLED` once `signal` is aborted (checked before each step of STEP bytes).
 */
export async function writeImageToDevice(
  file: string,
  device: BlockDevice,
  options: { targetIsZeroed?: boolean; progress?: (done: number, total: number) => void; signal?: AbortSignal } = {},
): Promise<CopyStats> {
  const fh = await open(file, 'r');
  try {
    const imageSize = (await fh.stat()).size;
    if (imageSize > device.size) {
      throw new CairnError('INVALID_INPUT', `image ${file} (${imageSize} bytes) is larger than the volume (${device.size} bytes)`);
    }
    const unit = device.extentGranularity;
    const stats: CopyStats = { bytesScanned: 0, bytesWritten: 0 };
    const src = Buffer.alloc(STEP);
    for (let off = 0; off < device.size; off += STEP) {
      throwIfAborted(options.signal, 'image');
      const len = Math.min(STEP, device.size - off);
      const image = await readAt(fh, src, off, len, imageSize);
      const current = options.targetIsZeroed ? undefined : await device.read(off, len);
      // Runs of adjacent differing blocks of one kind (data or zeros) go out as one call.
      let run: { start: number; end: number; zero: boolean } | undefined;
      const flushRun = async () => {
        if (!run) return;
        if (run.zero) await device.writeZeroes(off + run.start, run.end - run.start);
        else await device.write(off + run.start, Buffer.from(image.subarray(run.start, run.end)));
        stats.bytesWritten += run.end - run.start;
        run = undefined;
      };
      for (let b = 0; b < len; b += unit) {
        const n = Math.min(unit, len - b);
        const want = image.subarray(b, b + n);
        const wantZero = isZero(want);
        if (current ? want.equals(current.subarray(b, b + n)) : wantZero) {
          await flushRun();
          continue;
        }
        if (run && run.zero === wantZero && run.end === b) run.end = b + n;
        else {
          await flushRun();
          run = { start: b, end: b + n, zero: wantZero };
        }
      }
      await flushRun();
      stats.bytesScanned += len;
      options.progress?.(stats.bytesScanned, device.size);
    }
    await device.flush();
    return stats;
  } finally {
    await fh.close();
  }
}

/** Reads `len` bytes at `off`; bytes past the image's end read as zeros. */
async function readAt(fh: FileHandle, buf: Buffer, off: number, len: number, imageSize: number): Promise<Buffer> {
  const out = buf.subarray(0, len);
  out.fill(0);
  const avail = Math.max(0, Math.min(len, imageSize - off));
  let done = 0;
  while (done < avail) {
    const { bytesRead } = await fh.read(out, done, avail - done, off + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return out;
}

/**
 * Writes `device` to the raw image `file` (created or truncated, exactly `device.size` bytes),
 * reading only allocated extents and leaving holes for zero blocks. `CANCELLED` once `signal` is
 * aborted (checked before each step of STEP bytes); the caller removes the file.
 */
export async function writeDeviceToImage(device: BlockDevice, file: string, progress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<CopyStats> {
  const fh = await open(file, 'w');
  try {
    await fh.truncate(device.size);
    const stats: CopyStats = { bytesScanned: 0, bytesWritten: 0 };
    const extents = await device.extents({ kind: 'allocated' });
    const total = extents.reduce((n, e) => n + e.length, 0);
    for (const e of extents) {
      if (e.zero) continue;
      for (let off = e.offset; off < e.offset + e.length; off += STEP) {
        throwIfAborted(signal, 'image');
        const len = Math.min(STEP, e.offset + e.length - off);
        const data = await device.read(off, len);
        if (!isZero(data)) {
          await fh.write(data, 0, len, off);
          stats.bytesWritten += len;
        }
        stats.bytesScanned += len;
        progress?.(stats.bytesScanned, total);
      }
    }
    await fh.sync();
    return stats;
  } finally {
    await fh.close();
  }
}
