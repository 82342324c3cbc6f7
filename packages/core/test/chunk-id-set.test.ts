import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ChunkIdSet } from '../src/repository/chunk-id-set.js';

const hexId = (i: number): string => createHash('sha256').update(String(i)).digest('hex');

describe('ChunkIdSet', () => {
  it('answers like a Set of ids across growth and rehashing, keeping insertion order', () => {
    const set = new ChunkIdSet();
    const ids = Array.from({ length: 5000 }, (_, i) => hexId(i));
    for (const id of ids) expect(set.add(id)).toBe(true);
    for (const id of ids.slice(0, 100)) expect(set.add(id)).toBe(false);
    expect(set.size).toBe(5000);
    expect(ids.every((id) => set.has(id))).toBe(true);
    expect(set.has(hexId(5000))).toBe(false);
    expect(set.has('not an id')).toBe(false);
    expect(set.slice(0, 5000)).toEqual(ids);
    expect(set.slice(4990, 9999)).toEqual(ids.slice(4990));
  });

  it('refuses what is not a chunk id, adding nothing', () => {
    const set = new ChunkIdSet();
    expect(() => set.add('ABC')).toThrow(/not a chunk id/);
    expect(() => set.add(hexId(1).toUpperCase())).toThrow(/not a chunk id/);
    expect(set.size).toBe(0);
  });
});
