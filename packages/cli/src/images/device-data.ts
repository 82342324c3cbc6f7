import { assertReadInto, checkExtents, type BlockDevice, type ByteRange } from '@cairn/core';

/**
 * Where a device may hold non-zero bytes, from its allocated extents, so that a writer making it
 * equal to an image never reads or compares what already reads as zeros (holes, extents the
 * driver marks `zero`): on a sparse volume most of it.
 */

/**
 * The ranges of `range` on `device` that may hold non-zero bytes: its `allocated` extents not
 * marked `zero` (checked: `INTERNAL` naming the driver when they break the contract). Sorted,
 * non-overlapping; everything else of `range` reads as zeros. One `extents` call.
 */
export async function dataRanges(device: BlockDevice, range: ByteRange): Promise<ByteRange[]> {
  if (range.length === 0) return [];
  const query = { kind: 'allocated' } as const;
  const extents = checkExtents(device, query, await device.extents(query, range), range);
  return extents.filter((e) => !e.zero && e.length > 0).map((e) => ({ offset: e.offset, length: e.length }));
}

/**
 * Reads `length` bytes at `offset` of `device` into `into` (at least `length` bytes) and returns
 * `into.subarray(0, length)`: only the parts inside `data` (dataRanges of a range holding this
 * one, still true of the device) are read, the rest is filled with zeros.
 */
export async function readKnownData(device: BlockDevice, offset: number, length: number, data: readonly ByteRange[], into: Buffer): Promise<Buffer> {
  const out = into.subarray(0, length);
  out.fill(0);
  const end = offset + length;
  for (let i = firstEndingAfter(data, offset); i < data.length && data[i]!.offset < end; i++) {
    const from = Math.max(offset, data[i]!.offset);
    const to = Math.min(end, data[i]!.offset + data[i]!.length);
    const part = out.subarray(from - offset, to - offset);
    assertReadInto(device, await device.read(from, to - from, part), part, from, to - from);
  }
  return out;
}

/** Index of the first range of `ranges` (sorted, non-overlapping) that ends after `offset`. */
function firstEndingAfter(ranges: readonly ByteRange[], offset: number): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ranges[mid]!.offset + ranges[mid]!.length <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
