import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isShardedName, isTempName, keyToSegments, segmentsToKey, SHARD_MIN_HEX } from '../src/index.js';
import { newTempName } from '../src/key-layout.js';

const hex = (n: number): string => randomBytes(Math.ceil(n / 2)).toString('hex').slice(0, n);

/** The reverse mapping applied to a forward-mapped key. */
const roundTrip = (key: string): string | undefined => {
  const segs = keyToSegments(key);
  return segmentsToKey(segs.slice(0, -1), segs[segs.length - 1]!);
};

describe('key layout', () => {
  it('keyToSegments(data/<64 hex>) inserts the first two hex characters as a shard directory', () => {
    const id = `ab${hex(62)}`;
    expect(keyToSegments(`data/${id}`)).toEqual(['data', 'ab', id]);
    expect(keyToSegments(id)).toEqual(['ab', id]);
    expect(keyToSegments(`a/b/c/${id}`)).toEqual(['a', 'b', 'c', 'ab', id]);
  });

  it(`keyToSegments leaves short (< ${SHARD_MIN_HEX}), upper-case and non-hex last segments unsharded`, () => {
    for (const key of ['index/latest', `data/${hex(SHARD_MIN_HEX - 1)}`, 'data/ABCDEF0123456789ABCDEF', `data/${hex(20)}.tmp`, `data/${hex(20)}/x`]) {
      expect(keyToSegments(key), key).toEqual(key.split('/'));
    }
    expect(isShardedName(hex(SHARD_MIN_HEX))).toBe(true);
  });

  it('segmentsToKey(keyToSegments(key)) returns the key for sharded, unsharded and look-alike keys', () => {
    const id = `ab${hex(40)}`;
    const keys = [
      `data/${id}`,
      `data/ab/${id}`, // a real directory named like the shard
      `data/ab/ab/${id}`,
      'data/ab',
      'ab',
      id,
      'x/y.z-1_2',
      ...Array.from({ length: 200 }, () => `p${hex(2)}/${hex(2)}/${Math.random() < 0.5 ? hex(16 + Math.floor(Math.random() * 50)) : hex(4)}`),
    ];
    for (const key of keys) expect(roundTrip(key), key).toBe(key);
  });

  it('keyToSegments is injective: distinct keys never share a path', () => {
    const id = `cd${hex(30)}`;
    const keys = [`q/${id}`, `q/cd/${id}`, `q/cd/cd/${id}`, 'q/cd', `q/${id.slice(0, 15)}`, `cd/${id}`, id];
    const paths = new Set(keys.map((k) => keyToSegments(k).join('/')));
    expect(paths.size).toBe(keys.length);
  });

  it('segmentsToKey refuses temporary files, foreign names and sharded names outside their shard', () => {
    const id = `ef${hex(30)}`;
    expect(segmentsToKey(['data', 'ef'], newTempName())).toBeUndefined();
    expect(segmentsToKey(['data', 'ef'], 'sp ace')).toBeUndefined();
    expect(segmentsToKey(['data', '00'], id)).toBeUndefined();
    expect(segmentsToKey([], id)).toBeUndefined();
    expect(segmentsToKey(['da ta', 'ef'], id)).toBeUndefined();
  });

  it('newTempName() is unique, recognised by isTempName, and never a valid key segment', () => {
    const names = new Set(Array.from({ length: 1000 }, newTempName));
    expect(names.size).toBe(1000);
    for (const n of names) {
      expect(isTempName(n)).toBe(true);
      expect(/^[A-Za-z0-9._-]+$/.test(n)).toBe(false);
    }
    expect(isTempName('data')).toBe(false);
  });
});
