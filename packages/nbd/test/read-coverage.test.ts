// addSpan and claimByte against a byte-map model: random spans, in and out of order.
import { describe, expect, it } from 'vitest';
import { addSpan, claimByte } from '../src/read-coverage.js';

/** A deterministic generator of integers in [0, n). */
function seeded(seed: number): (n: number) => number {
  return (n) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
}

/** The spans a byte map's covered bytes make: sorted, disjoint, merged `[start, end, …]`. */
function spansOf(model: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < model.length; i++) {
    if (model[i] && (i === 0 || !model[i - 1])) out.push(i);
    if (model[i] && (i === model.length - 1 || !model[i + 1])) out.push(i + 1);
  }
  return out;
}

describe('addSpan', () => {
  it('accepts exactly the spans that overlap nothing covered, and keeps the list sorted, disjoint and merged', () => {
    const rand = seeded(12345);
    for (let round = 0; round < 2000; round++) {
      const size = 1 + rand(64);
      const model = new Uint8Array(size);
      const spans: number[] = [];
      for (let k = 0; k < 12; k++) {
        const start = rand(size);
        const end = start + rand(size - start + 1);
        const free = model.subarray(start, end).every((b) => b === 0);
        expect(addSpan(spans, start, end)).toBe(free);
        if (free) model.fill(1, start, end);
        expect(spans).toEqual(spansOf(model));
      }
    }
  });

  it('claimByte takes a byte unless taken already: later spans over it fail, and the list stays sorted, disjoint and merged', () => {
    const rand = seeded(777);
    for (let round = 0; round < 2000; round++) {
      const size = 1 + rand(64);
      const model = new Uint8Array(size);
      const spans: number[] = [];
      for (let k = 0; k < 12; k++) {
        const start = rand(size);
        if (rand(2) === 0) {
          claimByte(spans, start);
          model[start] = 1;
        } else {
          const end = start + rand(size - start + 1);
          const free = model.subarray(start, end).every((b) => b === 0);
          expect(addSpan(spans, start, end)).toBe(free);
          if (free) model.fill(1, start, end);
        }
        expect(spans).toEqual(spansOf(model));
      }
    }
  });
});
