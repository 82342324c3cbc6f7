/**
 * KeyedMutex.acquire with a `signal` that is not an AbortSignal is bad input (`INVALID_INPUT`
 * naming `signal`) and leaves no turn queued. It used to queue the caller's turn first and then
 * fail on `signal.addEventListener` with a TypeError, leaving that turn never released: every later
 * acquire of the key waited for ever.
 */
import { describe, expect, it } from 'vitest';
import { KeyedMutex } from '../src/index.js';

/**
 * Whether `acquiring` has resolved once everything already queued has run: it settles within
 * microtasks when its key is free, so one that has not by the next macrotask is waiting for a turn.
 */
async function state(acquiring: Promise<unknown>): Promise<'acquired' | 'waiting'> {
  const later = new Promise<'waiting'>((resolve) => setImmediate(() => resolve('waiting')));
  return Promise.race([acquiring.then(() => 'acquired' as const), later]);
}

const notASignal = { aborted: false } as unknown as AbortSignal;
/** Shaped like an AbortSignal, but refusing a listener. */
const refusingSignal = {
  aborted: false,
  addEventListener: () => {
    throw new Error('no listeners here');
  },
  removeEventListener: () => undefined,
} as unknown as AbortSignal;

describe('KeyedMutex.acquire with a bad signal', () => {
  for (const [name, signal] of [
    ['an object that is not an AbortSignal', notASignal],
    ['a signal whose addEventListener throws', refusingSignal],
  ] as const) {
    it(`${name} is INVALID_INPUT and the key stays free`, async () => {
      const mutex = new KeyedMutex();
      const refused: unknown = await mutex.acquire('k', signal).then(
        () => 'acquired',
        (err: unknown) => err,
      );
      // First whether the key is free (the old code left the refused turn queued for ever), then how it was refused.
      const next = mutex.acquire('k');
      expect(await state(next)).toBe('acquired');
      expect(refused).toMatchObject({ name: 'CairnError', code: 'INVALID_INPUT', details: { field: 'signal' } });
      (await next)();
      expect(mutex.isLocked('k')).toBe(false);
    });

    it(`${name} behind a holder neither blocks the key nor lets a later waiter in before the holder releases`, async () => {
      const mutex = new KeyedMutex();
      const releaseHolder = await mutex.acquire('k');
      const refused: unknown = await mutex.acquire('k', signal).then(
        () => 'acquired',
        (err: unknown) => err,
      );
      const next = mutex.acquire('k');
      expect(await state(next)).toBe('waiting');
      releaseHolder();
      expect(await state(next)).toBe('acquired');
      expect(refused).toMatchObject({ name: 'CairnError', code: 'INVALID_INPUT', details: { field: 'signal' } });
      (await next)();
      expect(mutex.isLocked('k')).toBe(false);
    });
  }

  it('an AbortSignal still works: a waiter whose signal aborts is CANCELLED and passes its turn on', async () => {
    const mutex = new KeyedMutex();
    const releaseHolder = await mutex.acquire('k');
    const controller = new AbortController();
    const waiter = mutex.acquire('k', controller.signal);
    const next = mutex.acquire('k');
    controller.abort();
    await expect(waiter).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(await state(next)).toBe('waiting');
    releaseHolder();
    expect(await state(next)).toBe('acquired');
    (await next)();
    expect(mutex.isLocked('k')).toBe(false);
  });
});
