import { CairnError } from '../errors.js';

/**
 * `p`'s outcome, or `CANCELLED` (tagged `driver`) as soon as `signal` is aborted, at once if it
 * already is. `p` itself goes on, observed (a rejection after the abort is never an unhandled
 * one) but no longer awaited: meant for work that one caller's departure must not end (shared
 * with other callers, or that cannot be stopped). Without a signal, `p` itself.
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined, driver?: string): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new CairnError('CANCELLED', 'cancelled', { driver, cause: signal.reason }));
    p.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}
