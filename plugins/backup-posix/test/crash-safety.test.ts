import { readdir, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isTempName, type PosixObjectStore } from '../src/index.js';
import { allFiles, assertDistFresh, listKeys, spawnChild, tempStore, type Child } from './helpers.js';

const BIG = 128 * 1024 * 1024;
const KEY = `data/${'ab'.repeat(32)}`;

/** Polls `dir` until a temporary file with at least one byte appears; returns its size then. */
async function waitForPartialTemp(dir: string, child: Child): Promise<number> {
  for (;;) {
    if (child.proc.exitCode !== null) throw new Error('child finished before a partial temporary file was seen');
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names.filter(isTempName)) {
      const size = (await stat(`${dir}/${name}`).catch(() => undefined))?.size ?? 0;
      if (size > 0) return size;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function killMidPut(store: PosixObjectStore, fill: number): Promise<{ seenSize: number }> {
  const child = spawnChild({ directory: store.directory, mode: 'put', key: KEY, size: BIG, fill });
  await child.waitFor('writing');
  const seenSize = await waitForPartialTemp(dirname(store.pathOf(KEY)), child);
  child.proc.kill('SIGKILL');
  const exit = await child.exited;
  expect(exit.signal).toBe('SIGKILL');
  return { seenSize };
}

function isWhole(buf: Buffer, size: number, fill: number): boolean {
  return buf.length === size && buf.equals(Buffer.alloc(size, fill));
}

describe('crash safety: a writer SIGKILLed in the middle of a put', () => {
  let store: PosixObjectStore;
  beforeAll(() => assertDistFresh());
  afterEach(async () => rm(store.directory, { recursive: true, force: true }));

  it('put(new key) killed mid-write leaves no object: get and head fail with NOT_FOUND, list shows nothing, and the stray temporary file is swept', async () => {
    store = await tempStore('crash-new');
    await store.put('index/keep', Buffer.from('unrelated'));
    const { seenSize } = await killMidPut(store, 0x11);
    expect(seenSize).toBeGreaterThan(0);

    await expect(store.head(KEY)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(store.get(KEY)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await listKeys(store)).toEqual(['index/keep']);
    const strays = (await allFiles(store.directory)).filter((f) => f.split('/').some(isTempName));
    expect(strays).toHaveLength(1);
    expect(await store.sweepTemp(0)).toBe(1);
    expect((await allFiles(store.directory)).filter((f) => f.includes('~'))).toEqual([]);
    expect(await listKeys(store)).toEqual(['index/keep']);
  });

  it('put(existing key) killed mid-write leaves the old object whole', async () => {
    store = await tempStore('crash-old');
    const old = Buffer.alloc(3 * 1024 * 1024 + 7, 0x22);
    await store.put(KEY, old);
    await killMidPut(store, 0x33);

    expect((await store.get(KEY)).equals(old)).toBe(true);
    expect((await store.head(KEY)).size).toBe(old.length);
    const listed = await listKeys(store);
    expect(listed).toEqual([KEY]);
    expect(await store.sweepTemp(0)).toBe(1);
  });

  it('put killed at varied moments (before, during and after the rename) leaves either the old or the whole new object, never a part', async () => {
    store = await tempStore('crash-any');
    const size = 32 * 1024 * 1024;
    await store.put(KEY, Buffer.alloc(size, 0x40));
    const outcomes: string[] = [];
    for (let round = 0; round < 5; round++) {
      const before = await store.get(KEY);
      const oldFill = before[0]!;
      const fill = 0x41 + round;
      const child = spawnChild({ directory: store.directory, mode: 'put', key: KEY, size, fill });
      await child.waitFor('writing');
      await new Promise((r) => setTimeout(r, round * round * 30));
      child.proc.kill('SIGKILL');
      await child.exited;
      const after = await store.get(KEY);
      const outcome = isWhole(after, size, fill) ? 'new' : isWhole(after, size, oldFill) ? 'old' : 'partial';
      expect(outcome, `round ${round}`).not.toBe('partial');
      outcomes.push(outcome);
      const infos = await listKeys(store);
      expect(infos).toEqual([KEY]);
    }
    // Whatever the timing, each round's temporary file is either published or left for the sweep.
    await store.sweepTemp(0);
    expect((await allFiles(store.directory)).filter((f) => f.includes('~'))).toEqual([]);
    console.log(`outcomes by kill delay: ${outcomes.join(', ')}`);
  });
});
