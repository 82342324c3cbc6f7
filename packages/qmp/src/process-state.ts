/**
 * A process's scheduler state from `/proc/<pid>/stat`, for liveness checks and for error messages
 * about a daemon that did not answer: "stopped (T)" says someone sent it SIGSTOP, "in
 * uninterruptible sleep (D)" a hung disk or NFS server.
 */
import { readFileSync } from 'node:fs';

const WORDS: Record<string, string> = {
  R: 'running',
  S: 'sleeping',
  D: 'in uninterruptible sleep',
  T: 'stopped',
  t: 'stopped by a tracer',
  Z: 'a zombie',
  X: 'dead',
  I: 'idle',
};

/** The state letter (`R`, `S`, `D`, `T`, `Z`, ...), or `undefined` when /proc cannot tell (the process is gone, or no /proc). */
export function processStateLetter(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name in parentheses may hold anything, ')' too: the state follows the last ')'.
    const at = stat.lastIndexOf(')') + 2;
    return stat.slice(at, at + 1) || undefined;
  } catch {
    return undefined;
  }
}

/** The state in words with its letter, e.g. `stopped (T)`; `undefined` when /proc cannot tell. */
export function processState(pid: number | undefined): string | undefined {
  const letter = pid === undefined ? undefined : processStateLetter(pid);
  return letter ? `${WORDS[letter] ?? 'in state'} (${letter})` : undefined;
}
