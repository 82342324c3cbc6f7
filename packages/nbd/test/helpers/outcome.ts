/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What `p` came to within `ms`: 'fulfilled', the rejection's code, or 'pending'. */
export async function outcome(p: Promise<unknown>, ms: number): Promise<string> {
  return Promise.race([
    p.then(
      () => 'fulfilled',
      (e: { code?: string }) => e.code ?? String(e),
    ),
    sleep(ms).then(() => 'pending'),
  ]);
}
