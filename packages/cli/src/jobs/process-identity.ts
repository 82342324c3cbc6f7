import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

/**
 * Which process a pid names. A pid alone is not an identity (the kernel reuses pids), so a job
 * records the pid together with the process's start time as the kernel reports it:
 * `/proc/<pid>/stat` field 22, `starttime`, in clock ticks since boot. Both together name one
 * process for the life of the boot.
 */

/** The kernel's start time of `pid` (clock ticks since boot); undefined when the process is gone, a zombie, or /proc is unavailable. */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined; // exited, not yet reaped
  const start = Number(fields[19]); // fields[0] is field 3 (state), so field 22 is fields[19]
  return Number.isSafeInteger(start) ? start : undefined;
}

/** Whether any process has `pid` (EPERM: one does, under another user). */
export function pidExists(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** What became of a job's recorded process: still running it, exited, or its pid now names another process. */
export type JobProcessState = 'alive' | 'gone' | 'reused';

/**
 * The state of the process recorded as (`pid`, `startTime`). With a start time, `alive` only
 * when the pid runs with that same start time. Without one (a record written before start times
 * were kept) the pid must exist and, when /proc shows its command line, run cairn; an
 * unreadable command line counts as `alive` (as before start times were kept).
 */
export function jobProcessState(pid: number, startTime: number | undefined): JobProcessState {
  if (!pidExists(pid)) return 'gone';
  if (startTime !== undefined) {
    const now = processStartTime(pid);
    if (now === undefined) return 'gone'; // exited (or a zombie) between the two looks
    return now === startTime ? 'alive' : 'reused';
  }
  return looksLikeCairn(pid) === false ? 'reused' : 'alive';
}

/**
 * Whether `pid` runs the cairn binary according to `/proc/<pid>/cmdline` (an argument whose
 * file name is `cairn` or `cairn.js`); undefined when the command line cannot be read.
 */
export function looksLikeCairn(pid: number): boolean | undefined {
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return undefined;
  }
  if (cmdline === '') return undefined; // a zombie or kernel thread: nothing to go on
  return cmdline
    .split('\0')
    .filter(Boolean)
    .some((arg) => /^cairn(\.js)?$/.test(basename(arg)));
}
