import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * Who is doing something: a process on a host. A pid alone does not name a process for long (the
 * kernel reuses pids; a restarted container's first process gets pid 1 again), so an owner also
 * carries the process's start time as the kernel reports it (`/proc/<pid>/stat` field 22,
 * `starttime`, clock ticks since boot). A pid means something only in its pid namespace and a
 * start time only within its boot, so an owner also carries both: host, boot, pid namespace, pid
 * and start time together name one process. The optional fields are absent where /proc cannot
 * be read, and in locks and records written before they were kept; a field that the owner or this
 * process lacks is not compared (an owner without a start time is judged by its pid alone).
 *
 * The host is taken to name one machine, that is one kernel: containers that share a host name
 * (`--network host`) share the kernel and its boot id and are told apart by their pid namespaces.
 * Two kernels under one host name (two machines called `localhost`, container runtimes that give
 * each container a boot id of its own) must not share a repository: another boot id under this
 * host name is taken for an earlier boot of this machine, whose processes are all gone (so what a
 * crash left is recovered after a reboot; records do not expire, locks do).
 */
export interface ProcessOwner {
  host: string;
  pid: number;
  startTime?: number;
  /** `/proc/sys/kernel/random/boot_id`, trimmed: changes at every boot. */
  bootId?: string;
  /** Inode number of the pid namespace, `N` of `readlink /proc/self/ns/pid` → `pid:[N]`. */
  pidNamespace?: number;
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
    const bootId = readOr(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined);
    const ns = readOr(() => /^pid:\[(\d+)\]$/.exec(readlinkSync('/proc/self/ns/pid'))?.[1]);
    self = {
      host: hostname(),
      pid: process.pid,
      ...(startTime !== undefined ? { startTime } : {}),
      ...(bootId !== undefined ? { bootId } : {}),
      ...(ns !== undefined ? { pidNamespace: Number(ns) } : {}),
    };
  }
  return { ...self };
}

function readOr(read: () => string | undefined): string | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}

/**
 * Whether `owner` is this process: the same host and pid, and equal in every other field both
 * carry (a field one of them lacks, as in records written before it was kept, is not compared).
 */
export function isThisProcess(owner: ProcessOwner): boolean {
  const me = currentOwner() as unknown as Record<string, unknown>;
  const other = owner as unknown as Record<string, unknown>;
  if (other.host !== me.host || other.pid !== me.pid) return false;
  return Object.keys(me).every((k) => other[k] === undefined || other[k] === me[k]);
}

/** Where an owner runs, seen from this process: see `ownerLocation`. */
export type OwnerLocation = 'here' | 'elsewhere' | 'past-boot';

/**
 * Where `owner` runs, seen from this process. `elsewhere`: another host, or another pid namespace
 * of this boot (another container): its pid means nothing in this /proc, so it cannot be judged
 * from here. `past-boot`: another boot id under this host name, that is an earlier boot of this
 * machine (see `ProcessOwner`): every process of it is gone. `here` otherwise, also when the
 * owner or this process lacks a field.
 */
export function ownerLocation(owner: ProcessOwner): OwnerLocation {
  if (owner.host !== hostname()) return 'elsewhere';
  const me = currentOwner();
  if (owner.bootId !== undefined && me.bootId !== undefined && owner.bootId !== me.bootId) return 'past-boot';
  if (owner.pidNamespace !== undefined && me.pidNamespace !== undefined && owner.pidNamespace !== me.pidNamespace) return 'elsewhere';
  return 'here';
}

/**
 * Whether `owner` may still be running. True when it runs `elsewhere` (see `ownerLocation`: it
 * cannot be checked from here); false for a `past-boot` owner. `here`: false when no process has
 * the pid, or when the pid is a zombie, or when the owner recorded a start time and the pid now
 * runs with another one (the pid was reused, by another process or by a later incarnation of this
 * one); otherwise true, including when /proc cannot tell (the pid exists: the safe answer).
 */
export function ownerMayBeAlive(owner: ProcessOwner): boolean {
  const where = ownerLocation(owner);
  if (where !== 'here') return where === 'elsewhere';
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
