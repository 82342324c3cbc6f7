import { describe, expect, it } from 'vitest';
import { FETCH_BATCH, batches } from '../src/repository/fetch-batches.js';

describe('batches', () => {
  it('splits ids into consecutive batches of at most the size, in order, with no empty one', () => {
    const ids = ['a', 'b', 'c', 'd', 'e'];
    expect([...batches(ids, 2)]).toEqual([['a', 'b'], ['c', 'd'], ['e']]);
    expect([...batches(ids.slice(0, 4), 2)]).toEqual([['a', 'b'], ['c', 'd']]);
    expect([...batches([], 2)]).toEqual([]);
    expect([...batches(new Set(ids))]).toEqual([ids]); // FETCH_BATCH by default
    expect(FETCH_BATCH).toBeGreaterThan(ids.length);
  });

  it('refuses a batch size that is not a positive integer (INTERNAL)', () => {
    for (const size of [0, -1, 1.5, Number.NaN]) expect(() => [...batches(['a'], size)]).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
  });
});
