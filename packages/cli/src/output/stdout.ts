/**
 * Writes to stdout that cannot end the process. A failed write to stdout (a reader gone: EPIPE;
 * stdout on a full disk or /dev/full: ENOSPC; EIO) is an 'error' event of process.stdout, which
 * with no listener throws, ending the process with a stack and exit 1 before the command's
 * context is closed (a qcow2 daemon left behind). Here the first such error is kept instead, for
 * the command runner to report once the command is done (stdoutFailure, command-runner.ts).
 */

let failure: NodeJS.ErrnoException | undefined;
let last: Promise<void> = Promise.resolve();
let watching = false;

/**
 * Keeps the first error of process.stdout (stdoutFailure) instead of letting it end the process:
 * also for writes made to process.stdout directly. Idempotent.
 */
export function watchStdout(): void {
  if (watching) return;
  watching = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    failure ??= err;
  });
}

/** Writes `text` to stdout; never throws, a failure is kept for stdoutFailure. */
export function writeStdout(text: string): void {
  watchStdout();
  last = new Promise((resolve) => {
    process.stdout.write(text, (err) => {
      if (err) failure ??= err;
      resolve();
    });
  });
}

/**
 * Once every writeStdout so far has completed (written, or failed), the first error stdout had,
 * if any: EPIPE when its reader is gone, or another system error. Waits for as long as the reader
 * takes to read what the stream still holds.
 */
export async function stdoutFailure(): Promise<NodeJS.ErrnoException | undefined> {
  // Writes done at once (a file, a pipe with room, one that failed) have called back by the next
  // turn of the event loop; only data the stream still holds (a full pipe) is waited for, so a
  // write that never calls back (process.stdout.write replaced in an in-process run) holds nothing.
  await new Promise((resolve) => setImmediate(resolve));
  if (process.stdout.writableLength > 0) await last;
  return failure;
}
