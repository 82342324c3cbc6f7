import { open, type FileHandle } from 'node:fs/promises';
import { CairnError, isZero, throwIfAborted, type BlockDevice, type ByteRange } from '@cairn/core';
import { dataRanges, readKnownData } from './device-data.js';
import { writeDiffering } from './differing-writes.js';

const MiB = 1024 * 1024;
/** Bytes read per step. */
const STEP = 4 * MiB;

export interface CopyStats {
  /** Logical bytes compared or copied (ranges the device's extents show read as zeros count as compared). */
  bytesScanned: number;
  /** Bytes written to the target (data that differed; zeros included). */
  bytesWritten: number;
}

/**
 * Writes the raw image `file` onto `device`, touching only the blocks (of the device's
 * `extentGranularity`) whose bytes differ (writeDiffering), so the volume's changed-block
 * tracking marks exactly what changed. Blocks past the image's end are made zero. What the device
 * holds is read only where its allocated extents say it may hold data (dataRanges, asked once
 * before anything is written): past the image's end only those ranges are visited at all, so an
 * image far smaller than a sparse volume costs the volume's data, not its size. `INVALID_INPUT`
 * when the image is larger than the device. With `targetIsZeroed`, the device is not read and
 * nothing past the image is visited. `CANCELLED` once `signal` is aborted (checked before each
 * step of at most STEP bytes visited).
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
    const data = options.targetIsZeroed ? [] : await dataRanges(device, { offset: 0, length: device.size });
    // The image's range in full, then past it only what may hold data (the rest reads as zeros).
    const visits: ByteRange[] = [{ offset: 0, length: imageSize }];
    for (const r of data) {
      const from = Math.max(r.offset, imageSize);
      if (r.offset + r.length > from) visits.push({ offset: from, length: r.offset + r.length - from });
    }
    const stats: CopyStats = { bytesScanned: 0, bytesWritten: 0 };
    const src = Buffer.alloc(STEP);
    const cur = Buffer.alloc(STEP);
    for (const v of visits) {
      for (let off = v.offset, end = v.offset + v.length; off < end; off += STEP) {
        throwIfAborted(options.signal, 'image');
        const len = Math.min(STEP, end - off);
        const image = await readAt(fh, src, off, len, imageSize);
        const current = await readKnownData(device, off, len, data, cur);
        stats.bytesWritten += await writeDiffering(device, off, image, current);
        stats.bytesScanned = off + len;
        options.progress?.(stats.bytesScanned, device.size);
      }
    }
    stats.bytesScanned = device.size;
    options.progress?.(device.size, device.size);
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
