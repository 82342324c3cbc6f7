import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * Who is doing something: a process on a host. A pid alone does not name a process for long (the
 * kernel reuses pids; a restarted container's first process gets pid 1 again), so an owner also
 * carries the process's start time as the kernel reports it (`/proc/<pid>/stat` field 22,
 * `starttime`, clock ticks since boot). Host, pid and start time together name one process for
 * the life of the boot. `startTime` is absent where /proc cannot be read, and in locks and records
 * written before it was kept; such owners are judged by their pid alone.
 *
 * The host is taken to name one machine (or one container): owners of another host are never
 * judged from here.
 */
export interface ProcessOwner {
  host: string;
  pid: number;
  startTime?: number;
}

/** What `/proc/<pid>/stat` says of a process; undefined when it cannot be read (no such process, no /proc). */
interface ProcStat {
  /** Field 3: R, S, D, Z (zombie), X (dead), ... */
  state: string;
  /** Field 22, clock ticks since boot; undefined if unparsable. */
  startTime?: number;
}

function readProcStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = Number(fields[19]); // fields[0] is field 3 (state), so field 22 is fields[19]
  return { state: fields[0] ?? '', startTime: Number.isSafeInteger(start) ? start : undefined };
}

/** The kernel's start time of `pid` (clock ticks since boot); undefined when the process is gone, a zombie, or /proc is unavailable. */
export function processStartTime(pid: number): number | undefined {
  const stat = readProcStat(pid);
  if (!stat || stat.state === 'Z' || stat.state === 'X') return undefined; // exited, not yet reaped
  return stat.startTime;
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

let self: ProcessOwner | undefined;

/** This process (computed once: none of it changes while the process runs). */
export function currentOwner(): ProcessOwner {
  if (!self) {
    const startTime = processStartTime(process.pid);
    self = { host: hostname(), pid: process.pid, ...(startTime !== undefined ? { startTime } : {}) };
  }
  return { ...self };
}

/**
 * Whether `owner` may still be running. Always true for another host (it cannot be checked from
 * here). On this host: false when no process has the pid, or when the pid is a zombie, or when
 * the owner recorded a start time and the pid now runs with another one (the pid was reused, by
 * another process or by a later incarnation of this one); otherwise true, including when /proc
 * cannot tell (the pid exists: the safe answer).
 */
export function ownerMayBeAlive(owner: ProcessOwner): boolean {
  if (owner.host !== hostname()) return true;
  // This process records its start time whenever it knows it: an owner with this pid but
  // without one (written before start times were kept) is an earlier process that had the pid.
  if (owner.pid === process.pid && owner.startTime === undefined && currentOwner().startTime !== undefined) return false;
  if (!pidExists(owner.pid)) return false;
  const stat = readProcStat(owner.pid);
  if (!stat) return true; // exists, but /proc cannot show it
  if (stat.state === 'Z' || stat.state === 'X') return false;
  if (owner.startTime === undefined || stat.startTime === undefined) return true;
  return stat.startTime === owner.startTime;
}
