import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { pidExists, processStartTime } from '@cairn/core';

/**
 * Which process a job's pid names. A pid alone is not an identity (the kernel reuses pids), so a
 * job records the pid together with the process's start time (core's `processStartTime`, as
 * locks and records do); both together name one process for the life of the boot.
 */

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
