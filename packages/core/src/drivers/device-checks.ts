import type { BlockDevice, ByteRange, Extent, ExtentQuery } from '../contracts/block-device.js';
import { CairnError } from '../errors.js';

/*
 * Checks a consumer of a BlockDevice makes of what the device answers, where trusting a driver
 * that breaks the contract would store wrong data without a word (stale bytes, chunks taken for
 * zeros or for the parent's). Each fails with `INTERNAL` naming the driver (`device.driverName`),
 * and costs one comparison per read or per extent, never per byte.
 */

/**
 * `INTERNAL` unless `got`, what `device.read(offset, length, into)` resolved with, is `into`'s
 * memory at `into`'s place, `length` bytes long (BlockDevice.read). A driver that returned a
 * buffer of its own left in `into` whatever it held before.
 */
export function assertReadInto(device: BlockDevice, got: Buffer, into: Buffer, offset: number, length: number): void {
  if (got?.buffer === into.buffer && got.byteOffset === into.byteOffset && got.length === length) return;
  throw new CairnError('INTERNAL', `read(${offset}, ${length}, into) resolved with a buffer other than into.subarray(0, ${length}): the BlockDevice contract says the bytes are read into the caller's buffer`, {
    driver: device.driverName,
    details: { offset, length },
  });
}

/**
 * `extents`, what `device.extents(query, range)` resolved with, once checked: `INTERNAL` unless
 * every extent has integer offset and length, lies inside `range` (default: the whole device) and
 * starts at or after the end of the one before (sorted, non-overlapping). One pass.
 */
export function checkExtents(device: BlockDevice, query: ExtentQuery, extents: Extent[], range: ByteRange = { offset: 0, length: device.size }): Extent[] {
  const invalid = (why: string, details: Record<string, unknown>): CairnError =>
    new CairnError('INTERNAL', `extents(${query.kind}) broke the BlockDevice contract: ${why}`, { driver: device.driverName, details: { query: query.kind, ...details } });
  if (!Array.isArray(extents)) throw invalid('not an array', {});
  const end = range.offset + range.length;
  let from = range.offset;
  for (const [index, e] of extents.entries()) {
    const ok = Number.isSafeInteger(e?.offset) && Number.isSafeInteger(e.length) && e.length >= 0;
    if (!ok || e.offset < from || e.offset + e.length > end) {
      const why = !ok ? 'offset or length is not a non-negative integer' : e.offset + e.length > end ? `it ends past ${end}` : e.offset < range.offset ? `it starts before ${range.offset}` : 'not sorted or overlapping';
      throw invalid(`extent ${index} ${JSON.stringify(e)}: ${why}`, { index, extent: e, range });
    }
    from = e.offset + e.length;
  }
  return extents;
}
