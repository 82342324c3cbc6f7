// addSpan and claimByte against a byte-map model: random spans, in and out of order.
import { describe, expect, it } from 'vitest';
import { addSpan, claimByte } from '../src/read-coverage.js';

describe('addSpan', () => {
  it('accepts exactly the spans that overlap nothing covered, and keeps the list sorted, disjoint and merged', () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
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
        const expected: number[] = [];
        for (let i = 0; i < size; i++) {
          if (model[i] && (i === 0 || !model[i - 1])) expected.push(i);
          if (model[i] && (i === size - 1 || !model[i + 1])) expected.push(i + 1);
        }
        expect(spans).toEqual(expected);
      }
    }
  });

  it('claimByte takes a byte unless taken already: later spans over it fail, and the list stays sorted, disjoint and merged', () => {
    let seed = 777;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
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
        const expected: number[] = [];
        for (let i = 0; i < size; i++) {
          if (model[i] && (i === 0 || !model[i - 1])) expected.push(i);
          if (model[i] && (i === size - 1 || !model[i + 1])) expected.push(i + 1);
        }
        expect(spans).toEqual(expected);
      }
    }
  });
});
