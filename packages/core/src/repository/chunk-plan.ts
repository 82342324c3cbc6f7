/**
 * Which chunks a backup reads, as ranges of chunk indexes rather than lists: the plan takes memory
 * in proportion to the extents the device reports, not to the volume's size, so an 8 GiB volume
 * plans in the same memory as a 2 GiB one.
 */
import type { ByteRange } from '../contracts/block-device.js';

/** Chunk indexes [start, end): half-open, start < end. */
export type ChunkRange = readonly [start: number, end: number];

/**
 * The chunk ranges that `extents` touch, below chunk `limit` (default: no limit), ascending, with
 * overlapping or adjacent ranges merged. Empty extents are ignored. Pure.
 */
export function chunkRangesOf(extents: Iterable<ByteRange>, chunkSize: number, limit = Infinity): ChunkRange[] {
  const touched: [number, number][] = [];
  for (const e of extents) {
    if (e.length <= 0) continue;
    touched.push([Math.floor(e.offset / chunkSize), Math.min(limit, Math.floor((e.offset + e.length - 1) / chunkSize) + 1)]);
  }
  return mergeRanges(touched);
}

/** Sorts and merges overlapping or adjacent ranges (the input may be in any order). Pure. */
export function mergeRanges(ranges: Iterable<ChunkRange>): ChunkRange[] {
  const sorted = [...ranges].filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/** Plaintext bytes chunk `index` of a volume of `size` bytes holds: `chunkSize`, or less for a short last one. Pure. */
export const chunkLength = (size: number, chunkSize: number, index: number): number => Math.min(chunkSize, size - index * chunkSize);

/** The ranges' chunk indexes, in order. Pure. */
export const indexesIn = (ranges: readonly ChunkRange[]): number[] => ranges.flatMap(([s, e]) => Array.from({ length: e - s }, (_, k) => s + k));

/** How many chunks the ranges hold. Pure. */
export const chunksIn = (ranges: readonly ChunkRange[]): number => ranges.reduce((n, [s, e]) => n + e - s, 0);

/**
 * The ranges' chunk indexes in order, `max` at a time (the last batch may be shorter), produced
 * lazily: batches cross range boundaries, so scattered chunks still travel in full batches.
 */
export function* batchesIn(ranges: readonly ChunkRange[], max: number): Generator<number[]> {
  let batch: number[] = [];
  for (const [s, e] of ranges) {
    for (let i = s; i < e; i++) {
      batch.push(i);
      if (batch.length === max) {
        yield batch;
        batch = [];
      }
    }
  }
  if (batch.length > 0) yield batch;
}

/** Splits ascending chunk indexes into runs of consecutive indexes, at most `max` long. Pure. */
export function runsOf(indexes: readonly number[], max: number): number[][] {
  const runs: number[][] = [];
  for (const i of indexes) {
    const last = runs[runs.length - 1];
    if (last && last[last.length - 1] === i - 1 && last.length < max) last.push(i);
    else runs.push([i]);
  }
  return runs;
}
