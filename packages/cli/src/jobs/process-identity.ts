import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { ownerLocation, pidExists, processStartTime, type ProcessOwner } from '@cairn/core';

/**
 * Which process a job's pid names. A pid alone is not an identity (the kernel reuses pids), so a
 * job records its process as locks and records do (core's `ProcessOwner`): host, boot, pid
 * namespace, pid and start time. The state directory may be shared (a config directory on a
 * shared disk mounted into several containers), so a job of another host or pid namespace can be
 * listed here, but never judged or signalled from here.
 */

/**
 * What became of a job's recorded process: still running it, exited, its pid now names another
 * process, or it runs `elsewhere` (another host, machine or pid namespace: it may be running).
 */
export type JobProcessState = 'alive' | 'gone' | 'reused' | 'elsewhere';

/**
 * The state of the process recorded as `owner`. `elsewhere` and `gone` (an earlier boot) as
 * core's `ownerLocation` says. Otherwise, with a start time, `alive` only when the pid runs with
 * that same start time. Without one (a record written before start times were kept) the pid must
 * exist and, when /proc shows its command line, run cairn; an unreadable command line counts as
 * `alive` (as before start times were kept).
 */
export function jobProcessState(owner: ProcessOwner): JobProcessState {
  const where = ownerLocation(owner);
  if (where === 'elsewhere') return 'elsewhere';
  if (where === 'past-boot' || !pidExists(owner.pid)) return 'gone';
  if (owner.startTime !== undefined) {
    const now = processStartTime(owner.pid);
    if (now === undefined) return 'gone'; // exited (or a zombie) between the two looks
    return now === owner.startTime ? 'alive' : 'reused';
  }
  return looksLikeCairn(owner.pid) === false ? 'reused' : 'alive';
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
