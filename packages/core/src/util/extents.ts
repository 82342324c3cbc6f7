import type { ByteRange, Extent } from '../contracts/block-device.js';

/** Sorts, clips to `within` and merges touching ranges with the same `zero` flag. Pure. */
export function normalizeExtents(extents: Iterable<Extent>, within?: ByteRange): Extent[] {
  const lo = within?.offset ?? 0;
  const hi = within ? within.offset + within.length : Number.MAX_SAFE_INTEGER;
  const clipped: Extent[] = [];
  for (const e of extents) {
    const start = Math.max(e.offset, lo);
    const end = Math.min(e.offset + e.length, hi);
    if (end > start) clipped.push(e.zero ? { offset: start, length: end - start, zero: true } : { offset: start, length: end - start });
  }
  clipped.sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of clipped) {
    const last = out[out.length - 1];
    const lastEnd = last ? last.offset + last.length : -1;
    const sameKind = !!last?.zero === !!e.zero;
    // Touching ranges of one kind merge; overlapping ranges of different kinds merge as data.
    if (last && (lastEnd > e.offset || (lastEnd === e.offset && sameKind))) {
      last.length = Math.max(lastEnd, e.offset + e.length) - last.offset;
      if (!sameKind) delete last.zero;
    } else {
      out.push({ ...e });
    }
  }
  return out;
}
