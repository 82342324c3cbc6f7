import { rm } from 'node:fs/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { allFiles, assertDistFresh, spawnChild, tempStore, type Child } from './helpers.js';

const SIZE = 4 * 1024 * 1024;
const WRITERS = 3;
const KEYS = Array.from({ length: 12 }, (_, i) => (i % 2 ? `race/k${i}` : `data/${i.toString(16).padStart(2, '0')}${'c0ffee'.repeat(10)}`));

describe('put(ifAbsent) from several processes', () => {
  let store: PosixObjectStore;
  const children: Child[] = [];
  beforeAll(() => assertDistFresh());
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    await rm(store.directory, { recursive: true, force: true });
  });

  it('put(ifAbsent) racing from three child processes on each of twelve keys: exactly one wins per key, the others get ALREADY_EXISTS, and the object is the winner\'s whole bytes', async () => {
    store = await tempStore('race');
    for (let w = 0; w < WRITERS; w++) {
      children.push(spawnChild({ directory: store.directory, mode: 'ifAbsent', size: SIZE, fill: w + 1, keys: KEYS }));
    }
    await Promise.all(children.map((c) => c.waitFor('ready')));
    for (const c of children) c.proc.stdin!.write('go\n');
    await Promise.all(children.map((c) => c.waitFor('done')));
    const exits = await Promise.all(children.map((c) => c.exited));
    expect(exits.map((e) => e.code)).toEqual(Array(WRITERS).fill(0));

    for (const key of KEYS) {
      const results = children.map((c, w) => ({ w, r: c.lines.find((l) => l.event === 'result' && l.key === key)! }));
      const winners = results.filter(({ r }) => r.ok === true);
      expect(winners, key).toHaveLength(1);
      for (const { r } of results) if (r.ok !== true) expect(r.code, key).toBe('ALREADY_EXISTS');
      const got = await store.get(key);
      expect(got.equals(Buffer.alloc(SIZE, winners[0]!.w + 1)), `${key} holds the winner's whole bytes`).toBe(true);
    }
    // Losers removed their temporary files.
    expect((await allFiles(store.directory)).filter((f) => f.includes('~'))).toEqual([]);
  });
});
