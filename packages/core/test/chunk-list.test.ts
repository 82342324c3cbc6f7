import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ChunkList } from '../src/repository/chunk-list.js';
import { jsonPieces } from '../src/repository/codec.js';

const hexId = (i: number): string => createHash('sha256').update(String(i)).digest('hex');

describe('ChunkList', () => {
  it('holds ids and zero chunks by index, and serializes as the manifest’s JSON array', () => {
    const ids = Array.from({ length: 10 }, (_, i) => (i % 4 === 0 ? null : hexId(i)));
    const list = ChunkList.from(ids);
    expect(list.length).toBe(10);
    for (let i = 0; i < 10; i++) {
      expect(list.get(i)).toBe(ids[i]);
      expect(list.isZero(i)).toBe(ids[i] === null);
    }
    expect(list.get(10)).toBeNull();
    expect(list.slice(2, 5)).toEqual(ids.slice(2, 5));
    expect(JSON.parse(JSON.stringify({ chunks: list }))).toEqual({ chunks: ids });
    expect(JSON.parse([...jsonPieces({ a: 1, chunks: list }, 'chunks')].join(''))).toEqual({ a: 1, chunks: ids });
  });

  it('set and copyFrom change chunks without touching the others', () => {
    const parent = ChunkList.from([hexId(1), null, hexId(3)]);
    const next = new ChunkList(4);
    next.copyFrom(parent, 4);
    expect(next.slice()).toEqual([hexId(1), null, hexId(3), null]);
    next.set(1, hexId(9));
    next.set(0, null);
    expect(next.slice()).toEqual([null, hexId(9), hexId(3), null]);
    expect(parent.slice()).toEqual([hexId(1), null, hexId(3)]);
  });

  it('lists each id once, in order of first use', () => {
    const list = ChunkList.from([hexId(2), hexId(1), null, hexId(2), hexId(3)]);
    expect([...list.distinct()]).toEqual([hexId(2), hexId(1), hexId(3)]);
  });

  it('refuses malformed ids and indexes outside the list', () => {
    expect(() => ChunkList.from([hexId(1), 'abc'])).toThrow(/chunk 1 has a malformed id/);
    expect(() => ChunkList.from([42])).toThrow(/malformed/);
    expect(() => ChunkList.from([hexId(1).toUpperCase()])).toThrow(/malformed/);
    const list = new ChunkList(2);
    expect(() => list.set(2, hexId(1))).toThrow(RangeError);
    expect(() => list.set(0, 'zz'.repeat(32))).toThrow(/not a chunk id/);
    expect(() => list.set(0, hexId(1).slice(0, 62))).toThrow(/not a chunk id/);
  });
});
