import { describe, expect, it } from 'vitest';
import { batchesIn, chunkRangesOf, chunksIn, indexesIn, mergeRanges, runsOf } from '../src/repository/chunk-plan.js';

describe('chunk plan', () => {
  it('turns extents into merged, ascending chunk ranges', () => {
    const extents = [
      { offset: 10 * 4096, length: 4096 }, // chunk 2 (chunk size 16 KiB)
      { offset: 0, length: 1 }, // chunk 0
      { offset: 16384 - 1, length: 2 }, // chunks 0-1: merges with the first
      { offset: 100 * 16384, length: 0 }, // empty: ignored
      { offset: 40 * 16384 + 5, length: 3 * 16384 }, // chunks 40-43
    ];
    expect(chunkRangesOf(extents, 16384)).toEqual([
      [0, 3],
      [40, 44],
    ]);
  });

  it('stops at a chunk limit and lists the indexes of ranges', () => {
    const extents = [{ offset: 0, length: 3 * 16384 }, { offset: 9 * 16384, length: 4 * 16384 }, { offset: 20 * 16384, length: 1 }];
    expect(chunkRangesOf(extents, 16384, 11)).toEqual([
      [0, 3],
      [9, 11],
    ]);
    expect(indexesIn(chunkRangesOf(extents, 16384, 11))).toEqual([0, 1, 2, 9, 10]);
    expect(indexesIn([])).toEqual([]);
  });

  it('merges overlapping and adjacent ranges given in any order', () => {
    expect(mergeRanges([[8, 9], [0, 2], [2, 4], [3, 5], [7, 7]])).toEqual([
      [0, 5],
      [8, 9],
    ]);
    expect(chunksIn([[0, 5], [8, 9]])).toBe(6);
  });

  it('batches the indexes of the ranges in order, across range boundaries', () => {
    const ranges = [[0, 3], [10, 12], [20, 25]] as const;
    expect([...batchesIn(ranges, 4)]).toEqual([
      [0, 1, 2, 10],
      [11, 20, 21, 22],
      [23, 24],
    ]);
    expect([...batchesIn([], 4)]).toEqual([]);
  });

  it('splits a batch into runs of consecutive indexes', () => {
    expect(runsOf([0, 1, 2, 10, 11, 20], 2)).toEqual([[0, 1], [2], [10, 11], [20]]);
  });

  it('plans a large volume in memory that follows its extents, not its size', () => {
    // One extent of 2^40 bytes in 128 KiB chunks: one range, not 8 million indexes.
    expect(chunkRangesOf([{ offset: 0, length: 2 ** 40 }], 131072)).toEqual([[0, 2 ** 23]]);
  });
});
