/**
 * The posix store checks its signal between the steps of a write (temporary file, each write(2),
 * fsync, rename or link, directory fsync) and of a read: a signal that turns aborted at its k-th
 * look, for every k, shows each step's check. Once a check sees the abort, the call rejects
 * CANCELLED, never publishes, and leaves no temporary file; the previous object stays whole.
 */
import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { allFiles, listKeys, tempStore } from './helpers.js';

const MiB = 1024 * 1024;

/** A signal that reads as aborted from its `k`-th look at `aborted` on (1-based); counts the looks. */
function abortsAtLook(k: number): AbortSignal & { looks: number } {
  const s = {
    looks: 0,
    reason: new Error('cancelled by the test'),
    get aborted(): boolean {
      return ++s.looks >= k;
    },
    addEventListener: () => undefined,
    removeEventListener: () => undefined,
  };
  return s as unknown as AbortSignal & { looks: number };
}

let store: PosixObjectStore | undefined;
afterEach(async () => {
  if (store) await rm(store.directory, { recursive: true, force: true });
  store = undefined;
});

const temps = async (s: PosixObjectStore): Promise<string[]> => (await allFiles(s.directory)).filter((f) => f.includes('~tmp-'));

/**
 * Runs `call` with a signal aborting at look k = 1, 2, … until it resolves: every earlier run
 * must reject CANCELLED and leave `check` true. Returns how many runs were cancelled.
 */
async function everyStep(call: (signal: AbortSignal) => Promise<unknown>, check: () => Promise<void>): Promise<number> {
  for (let k = 1; k < 100; k++) {
    const signal = abortsAtLook(k);
    const outcome = await call(signal).then(
      () => undefined,
      (err: unknown) => err,
    );
    if (outcome === undefined) return k - 1;
    expect(outcome, `abort at look ${k}`).toMatchObject({ code: 'CANCELLED' });
    await check();
  }
  throw new Error('the call never completed');
}

describe('the posix store observes an abort between the steps of a call', () => {
  it('put (replacing, and ifAbsent): cancelled at any step before the rename it publishes nothing and leaves no temporary file', async () => {
    const s = (store = await tempStore('cancel-steps'));
    await s.put('k/obj', Buffer.from('original'));
    const data = Buffer.alloc(20 * MiB + 3, 0x5a); // buffered: three write(2)s of at most 8 MiB
    const replaced = await everyStep(
      (signal) => s.put('k/obj', data, { signal }),
      async () => {
        expect((await s.get('k/obj')).toString()).toBe('original');
        expect(await temps(s)).toEqual([]);
      },
    );
    // Before the temp file, 3 writes, before fsync, after close, before the rename.
    expect(replaced).toBeGreaterThanOrEqual(6);
    expect((await s.get('k/obj')).equals(data)).toBe(true);

    const fresh = await everyStep(
      (signal) => s.put('k/new', data, { ifAbsent: true, signal }),
      async () => {
        expect(await listKeys(s, 'k/')).toEqual(['k/obj']);
        expect(await temps(s)).toEqual([]);
      },
    );
    expect(fresh).toBeGreaterThanOrEqual(6);
    expect((await s.get('k/new')).equals(data)).toBe(true);
  });

  it('a write in parts: cancelled at any append or commit step, commit rejects CANCELLED, nothing is published and abort() removes the temporary file', async () => {
    const s = (store = await tempStore('cancel-steps'));
    const parts = [Buffer.alloc(3 * MiB, 1), Buffer.alloc(MiB + 17, 2)];
    const cancelled = await everyStep(
      async (signal) => {
        const w = await s.openWrite('p/obj', { signal });
        try {
          for (const p of parts) await w.append(p);
          await w.commit();
        } catch (err) {
          await w.abort();
          throw err;
        }
      },
      async () => {
        expect(await listKeys(s, 'p/')).toEqual([]);
        expect(await temps(s)).toEqual([]);
      },
    );
    expect(cancelled).toBeGreaterThanOrEqual(5);
    expect((await s.get('p/obj')).equals(Buffer.concat(parts))).toBe(true);
  });

  it('get and getInto: cancelled between reads of a long object, they reject CANCELLED', async () => {
    const s = (store = await tempStore('cancel-steps'));
    const data = Buffer.alloc(20 * MiB, 7);
    await s.put('r/obj', data);
    expect(await everyStep((signal) => s.get('r/obj', undefined, { signal }), async () => undefined)).toBeGreaterThanOrEqual(3);
    const into = Buffer.alloc(data.length);
    expect(await everyStep((signal) => s.getInto('r/obj', { offset: 0, length: data.length }, into, { signal }), async () => undefined)).toBeGreaterThanOrEqual(3);
    expect(into.equals(data)).toBe(true);
  });
});
