import { setTimeout as delay } from 'node:timers/promises';

/**
 * Runs `step`; when it rejects and `shouldRetry(err)` holds, runs it again after each of
 * `delaysMs` in turn (so at most `delaysMs.length + 1` tries). Resolves as the first try that
 * succeeds; rejects with the error of the last try, or of the first one `shouldRetry` refuses.
 * Once `signal` has fired no further try is made: a wait for one ends at once, and the call
 * rejects with the error of the try before it.
 */
export async function withRetries<T>(step: () => Promise<T>, delaysMs: readonly number[], shouldRetry: (err: unknown) => boolean = () => true, signal?: AbortSignal): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (err) {
      if (attempt >= delaysMs.length || !shouldRetry(err) || signal?.aborted) throw err;
      await delay(delaysMs[attempt], undefined, signal ? { signal } : undefined).catch(() => undefined);
      if (signal?.aborted) throw err;
    }
  }
}
