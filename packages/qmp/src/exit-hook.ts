/**
 * Ends the daemons still running when this process exits normally (`process.exit`, an empty
 * event loop, an uncaught exception): each gets SIGTERM, which qemu-storage-daemon handles as a
 * clean `quit` (persistent dirty bitmaps are written and marked not in use, image locks
 * released); the exit then waits for them, at most EXIT_QUIT_MS in all, and SIGKILLs any still
 * there (one frozen with SIGSTOP, or wedged in I/O), so none outlives this process whatever it
 * does with SIGTERM. A death without the `exit` event (SIGKILL, a signal without handler) is
 * parent-death.ts's business.
 *
 * The wait is synchronous (the `exit` event allows nothing else): it polls /proc every 10 ms for
 * the child having become a zombie. An exited child stays a zombie until reaped, which this
 * process (its parent) does not do while it waits, so its pid cannot be reused before the SIGKILL.
 * Without /proc (not Linux) nothing tells an exit apart, so SIGKILL follows SIGTERM at once.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { processStateLetter } from './process-state.js';

/** Longest time a normal exit waits for the daemons' clean quit before SIGKILL. */
export const EXIT_QUIT_MS = 3_000;
const POLL_MS = 10;

const live = new Set<ChildProcess>();
let installed = false;

/** Ends `child` at this process's exit unless it exited before (see the file comment). */
export function endAtExit(child: ChildProcess): void {
  if (!installed) {
    installed = true;
    process.once('exit', endLiveChildren);
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
}

/** Whether `child` is still running: not yet seen to exit, and not a zombie in /proc. */
function running(child: ChildProcess): boolean {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return false;
  const state = processStateLetter(child.pid);
  return state !== undefined && state !== 'Z' && state !== 'X';
}

function endLiveChildren(): void {
  const children = [...live];
  if (children.length === 0) return;
  for (const child of children) child.kill('SIGTERM');
  const canWatch = existsSync('/proc/self/stat');
  if (canWatch) {
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    const deadline = performance.now() + EXIT_QUIT_MS; // monotonic: a wall-clock step neither cuts nor stretches the wait
    while (children.some(running) && performance.now() < deadline) Atomics.wait(sleeper, 0, 0, POLL_MS);
  }
  for (const child of children) if (!canWatch || running(child)) child.kill('SIGKILL');
}
