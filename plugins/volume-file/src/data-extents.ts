import type { FileHandle } from 'node:fs/promises';
import { isZero, readFully, type ByteRange, type Extent } from '@cairn/core';
import { fsExt, seekData, seekHole, type FsExt } from './native-fs.js';

/** Unit of the zero scan used without fs-ext, in bytes. */
const SCAN_GRANULE = 64 * 1024;
const SCAN_CHUNK = 1024 * 1024;

/**
 * Ranges of `range` that may hold data in the file behind `fh`; everything outside them reads as
 * zeros. With fs-ext: the file system's own map (lseek SEEK_DATA/SEEK_HOLE), exact to its block
 * size; a fully sparse range costs one lseek. Without: a read of the range that reports every
 * 64 KiB granule holding a non-zero byte (reads of holes cost no disk I/O, but the scan is
 * O(size)). Never misses data. `ext` defaults to the loaded fs-ext; pass null to force the scan.
 *
 * st_blocks is never consulted: it may lag behind writes (ZFS until its transaction group syncs,
 * some network file systems), so "0 blocks" does not prove "no data".
 */
export async function dataExtents(fh: FileHandle, range: ByteRange, ext: FsExt | null = fsExt() ?? null): Promise<Extent[]> {
  const end = range.offset + range.length;
  if (range.length === 0) return [];
  if (ext) {
    const out: Extent[] = [];
    let pos = range.offset;
    while (pos < end) {
      const data = seekData(ext, fh.fd, pos, end);
      if (data >= end) break;
      const hole = seekHole(ext, fh.fd, data, end);
      out.push({ offset: data, length: hole - data });
      pos = hole;
    }
    return out;
  }
  return scanNonZero(fh, range);
}

async function scanNonZero(fh: FileHandle, range: ByteRange): Promise<Extent[]> {
  const end = range.offset + range.length;
  const buf = Buffer.allocUnsafe(SCAN_CHUNK);
  const out: Extent[] = [];
  let pos = range.offset;
  while (pos < end) {
    const n = Math.min(SCAN_CHUNK, end - pos);
    buf.fill(0, await readFully(fh, buf.subarray(0, n), pos), n); // past the file's end: zeros
    for (let at = 0; at < n; ) {
      const granuleEnd = Math.min(n, at + SCAN_GRANULE - ((pos + at) % SCAN_GRANULE));
      if (!isZero(buf.subarray(at, granuleEnd))) {
        const last = out[out.length - 1];
        if (last && last.offset + last.length === pos + at) last.length += granuleEnd - at;
        else out.push({ offset: pos + at, length: granuleEnd - at });
      }
      at = granuleEnd;
    }
    pos += n;
  }
  return out;
}
