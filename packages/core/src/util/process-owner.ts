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
 * One kernel is told by its boot id: containers that share a host name (`--network host`) share
 * the kernel and its boot id and are told apart by their pid namespaces. Another boot id under
 * this host name is taken for an earlier boot of this machine, whose processes are all gone (so
 * what a crash left is recovered after a reboot; records do not expire, locks do), unless the
 * machine ids tell another machine: two machines may share a host name (two VMs called
 * `localhost`, cloned images) and a repository or state directory, and an owner whose machine id
 * differs from this process's, under another boot id, runs `elsewhere` (may be alive: never judged
 * from here). Under this boot id the machine id is not compared: containers of one kernel whose
 * images carry machine ids of their own are one machine, told apart by their pid namespaces.
 * Machines that share both host name and machine id (an image cloned without a new
 * `/etc/machine-id`) are still taken for one machine, and so are an owner and a process of which
 * either lacks a machine id (owners written before it was kept judge as they did then).
 */
export interface ProcessOwner {
  host: string;
  pid: number;
  startTime?: number;
  /** `/proc/sys/kernel/random/boot_id`, trimmed: changes at every boot. */
  bootId?: string;
  /** Inode number of the pid namespace, `N` of `readlink /proc/self/ns/pid` → `pid:[N]`. */
  pidNamespace?: number;
  /**
   * The machine id, `/etc/machine-id` or else `/var/lib/dbus/machine-id`, trimmed: stays across
   * boots, tells machines that share a host name apart. Absent where neither file can be read or
   * is empty.
   */
  machineId?: string;
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

/** Where the machine id is read, first readable non-empty one wins (systemd's, then D-Bus's older place). */
const MACHINE_ID_FILES = ['/etc/machine-id', '/var/lib/dbus/machine-id'];

/** This process (computed once: none of it changes while the process runs). */
export function currentOwner(): ProcessOwner {
  if (!self) {
    const startTime = processStartTime(process.pid);
    const bootId = readOr(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined);
    const ns = readOr(() => /^pid:\[(\d+)\]$/.exec(readlinkSync('/proc/self/ns/pid'))?.[1]);
    const machineId = MACHINE_ID_FILES.map((file) => readOr(() => readFileSync(file, 'utf8').trim() || undefined)).find((id) => id !== undefined);
    self = {
      host: hostname(),
      pid: process.pid,
      ...(startTime !== undefined ? { startTime } : {}),
      ...(bootId !== undefined ? { bootId } : {}),
      ...(ns !== undefined ? { pidNamespace: Number(ns) } : {}),
      ...(machineId !== undefined ? { machineId } : {}),
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
 * Where `owner` runs, seen from this process. `elsewhere`: another host; another machine under
 * this host name (both carry a machine id and they differ, and the boot ids are not known equal); or another pid
 * namespace of this boot (another container): its pid means nothing in this /proc, so it cannot
 * be judged from here. `past-boot`: another boot id under this host name and machine id (or where
 * the owner or this process lacks a machine id, as in owners written before it was kept), that
 * is an earlier boot of this machine (see `ProcessOwner`): every process of it is gone. `here`
 * otherwise, also when the owner or this process lacks a field.
 */
export function ownerLocation(owner: ProcessOwner): OwnerLocation {
  if (owner.host !== hostname()) return 'elsewhere';
  const me = currentOwner();
  // One boot id is one kernel, so machine ids (which containers of one kernel may carry apart) are not compared then.
  const sameBoot = owner.bootId !== undefined && owner.bootId === me.bootId;
  if (!sameBoot && owner.machineId !== undefined && me.machineId !== undefined && owner.machineId !== me.machineId) return 'elsewhere';
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
