import { cancelledError } from '../errors.js';

/**
 * `p`'s outcome, or `CANCELLED` (tagged `driver`) as soon as `signal` is aborted, at once if it
 * already is. `p` itself goes on, observed (a rejection after the abort is never an unhandled
 * one) but no longer awaited: meant for work that one caller's departure must not end (shared
 * with other callers, or that cannot be stopped). Without a signal, `p` itself.
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined, driver?: string): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(cancelledError(signal, { message: 'cancelled', driver }));
    p.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The items of `items`, ending with `CANCELLED` (tagged `driver`) as soon as `signal` is aborted,
 * even while a step is pending (a store's listing that ignores the signal): that step goes on,
 * observed but no longer awaited, and the iterator is asked to end (its `return`, not awaited
 * then). A consumer that stops early (break) ends the iterator as `for await` would. Without a
 * signal, `items` as they are.
 */
export async function* eachUntilAborted<T>(items: AsyncIterable<T>, signal: AbortSignal | undefined, driver?: string): AsyncGenerator<T, void, undefined> {
  if (!signal) {
    yield* items;
    return;
  }
  const it = items[Symbol.asyncIterator]();
  /** The iterator may still hold something (it neither finished nor failed). */
  let open = true;
  try {
    for (;;) {
      let step: IteratorResult<T>;
      try {
        step = await untilAborted(it.next(), signal, driver);
      } catch (err) {
        open = signal.aborted; // a failed step ended the iterator; an abort left it open
        throw err;
      }
      if (step.done) {
        open = false;
        return;
      }
      yield step.value;
    }
  } finally {
    if (open && it.return) {
      const closing = Promise.resolve().then(() => it.return!());
      if (signal.aborted) closing.catch(() => undefined);
      else await closing;
    }
  }
}
