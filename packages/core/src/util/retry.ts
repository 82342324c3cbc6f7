/**
 * Runs `step`; when it rejects and `shouldRetry(err)` holds, runs it again after each of
 * `delaysMs` in turn (so at most `delaysMs.length + 1` tries). Resolves as the first try that
 * succeeds; rejects with the error of the last try, or of the first one `shouldRetry` refuses.
 */
export async function withRetries<T>(step: () => Promise<T>, delaysMs: readonly number[], shouldRetry: (err: unknown) => boolean = () => true): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (err) {
      if (attempt >= delaysMs.length || !shouldRetry(err)) throw err;
      await new Promise((r) => setTimeout(r, delaysMs[attempt]));
    }
  }
}
