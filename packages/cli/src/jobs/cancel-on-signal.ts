import { CairnError } from '@cairn/core';
import type { Output } from '../output/output.js';

/**
 * Installs SIGINT and SIGTERM handlers: the first signal calls `cancel` (which asks the running
 * work to stop and clean up), a second one exits at once with 130. Returns their removal, which
 * the caller runs once the work has settled.
 */
export function onInterrupt(cancel: (sig: NodeJS.Signals) => void): () => void {
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) process.exit(130);
    cancel(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

/**
 * Runs `work` with an AbortSignal that the first SIGINT or SIGTERM aborts (reason: a CANCELLED
 * CairnError), for long commands that are not manager jobs (`volume import|export`, `backup
 * export|import`): the work stops at its next check and cleans up as on any other failure
 * (temporary file, staging volume, a volume it created, an import's claim), then the command
 * fails with CANCELLED (exit 130). A second signal exits at once with 130, as for jobs (runJob).
 */
export async function cancellableBySignal<T>(out: Output, what: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const remove = onInterrupt((sig) => {
    out.info(`${sig}: cancelling ${what}`);
    controller.abort(new CairnError('CANCELLED', `${what} cancelled by ${sig}`));
  });
  try {
    return await work(controller.signal);
  } finally {
    remove();
  }
}
