/**
 * Ties a child process's life to this process on Linux: the child is started through
 * util-linux's `setpriv --pdeathsig SIGTERM` (Essential in Debian, so always installed there),
 * which sets PR_SET_PDEATHSIG and then execs the program. When this process dies in any way
 * (SIGKILL, OOM kill, a signal without handler) the kernel sends the child SIGTERM;
 * qemu-storage-daemon treats SIGTERM as a clean `quit` (persistent bitmaps are written and the
 * image locks released). The exec keeps the pid: the child's pid is the program's.
 *
 * Limits: the signal follows the *thread* that spawned the child (a daemon started from a worker
 * thread is stopped when that worker ends), and a death of this process in the instant between
 * fork and prctl is not seen. Elsewhere (not Linux, no usable `setpriv`) the program is run
 * directly and only the `exit` hook (exit-hook.ts) stops it, at a normal exit.
 */
import { execFile } from 'node:child_process';

let probe: Promise<boolean> | undefined;

/** Whether `setpriv --pdeathsig` works here (checked once per process). */
export function canTieToParent(): Promise<boolean> {
  probe ??= new Promise<boolean>((resolve) => {
    if (process.platform !== 'linux') return resolve(false);
    execFile('setpriv', ['--pdeathsig', 'SIGTERM', '--', 'true'], { timeout: 5_000 }, (err) => resolve(!err));
  });
  return probe;
}

/**
 * The program and arguments that run `binary argv` as a child that gets SIGTERM when this process
 * dies; `tied` is false where that cannot be arranged (the program is then run directly).
 */
export async function tiedToParent(binary: string, argv: string[]): Promise<{ file: string; args: string[]; tied: boolean }> {
  if (!(await canTieToParent())) return { file: binary, args: argv, tied: false };
  return { file: 'setpriv', args: ['--pdeathsig', 'SIGTERM', '--', binary, ...argv], tied: true };
}
