import type { BackupManager, BackupRecord, Job } from '@cairn/core';
import { progressReporter } from '../output/progress.js';
import type { Output } from '../output/output.js';
import { onInterrupt } from './cancel-on-signal.js';
import { registerJob } from './job-files.js';

/**
 * Runs a started job in the foreground: records it in the state dir's jobs directory (so
 * `cairn backup cancel` can find it), shows progress, and turns SIGINT/SIGTERM into a
 * cancellation through the job's AbortSignal (a second signal exits at once with 130).
 * Settles like `job.done`; the job record is removed either way. When the job cannot be
 * recorded, the job is cancelled and awaited before the registration error is thrown, so a
 * reported failure means no backup or restore was made (if the job finished before the cancel
 * took effect, its result is returned with a warning instead).
 *
 * `cancelHint` says how to cancel the job, in the line that announces it. Default: `cancel with:
 * cairn backup cancel <id>`, which holds only where the user's `cairn` finds `stateDir`: commands
 * give CliContext.cancelHint (naming their config), the demo its own (its state directory is
 * temporary).
 */
export async function runJob(manager: BackupManager, job: Job, stateDir: string, out: Output, cancelHint = `cancel with: cairn backup cancel ${job.id}`): Promise<BackupRecord> {
  const progress = progressReporter(job.kind, out.options);
  const onProgress = (e: { id: string; bytesDone: number; bytesTotal: number }) => {
    if (e.id === job.backupId) progress.update(e.bytesDone, e.bytesTotal);
  };
  manager.on('progress', onProgress);
  const removeSignalHandlers = onInterrupt((sig) => {
    out.info(`${sig}: cancelling ${job.kind} job ${job.id}`);
    job.cancel(`cancelled by ${sig}`);
  });
  let unregister = async () => {};
  try {
    try {
      unregister = await registerJob(stateDir, { id: job.id, kind: job.kind, backupId: job.backupId, volumeId: job.volumeId });
    } catch (err) {
      job.cancel('the job could not be recorded');
      const result = await job.done.catch(() => undefined);
      if (!result) throw err;
      out.warn(`${job.kind} job ${job.id} finished before it could be cancelled (it could not be recorded: ${(err as Error).message})`);
      return result;
    }
    out.info(`${job.kind} job ${job.id} started (${cancelHint})`);
    return await job.done;
  } finally {
    progress.stop();
    manager.off('progress', onProgress);
    removeSignalHandlers();
    await unregister();
  }
}
