/**
 * Waiting in tests, without imports (any package's tests may import this file).
 *
 * `within(p, ms)`: `p`'s outcome, or a rejection "hung: not settled within `ms` ms" when `p` has
 * not settled by then. A bound telling "never settles" from "settles", not a timing: pick `ms`
 * generous (a loaded machine is slow, not stuck). Its timer does not keep the process alive.
 */
export const within = <T,>(p: Promise<T>, ms: number): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`hung: not settled within ${ms} ms`)), ms).unref())]);

/** Resolves after `ms` (5 unless given): a pause between polls, or to let other work run. */
export const tick = (ms = 5): Promise<void> => new Promise((r) => setTimeout(r, ms));
