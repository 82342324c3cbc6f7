/**
 * Ownership of the daemons' temp dirs (`<parent>/cairn-qsd-XXXXXX`; `cairn-qsk-XXXXXX` for one
 * kept with `keepDir`, which the sweep never looks at: see KEPT_DIR_PREFIX). Each dir gets an `owner`
 * file naming the Node process that created it and the daemon's pid. `removeStaleDirs` removes
 * the dirs left behind by callers killed before they could clean up, so sockets and logs do not
 * pile up:
 * - A dir with an `owner` file is removed when its owner and its daemon are both gone and no unix
 *   socket in it accepts a connection (judged as for an owner-less dir, below). With any process
 *   alive it is left alone; a reused pid only delays a removal, never causes a wrong one. Pids
 *   mean something only in their pid namespace: a daemon started from another one (a container
 *   sharing the parent dir) has pids that are gone or name other processes here, so its sockets
 *   decide. The owner file records the owner's pid namespace (`pidNamespace`, the inode of
 *   `/proc/self/ns/pid`). A dir of another namespace, or of an owner file without it (older
 *   versions), whose pids are gone here is judged as an owner-less dir is (quiet for the grace, no
 *   socket served): its daemon may be starting, its sockets not made yet. One of this namespace
 *   whose pids are gone is removed once no socket in it is served.
 *   A dir kept on purpose (`keep`: the daemon was started with `keepDir`, whose log is there to be
 *   read after the daemon and its caller are gone) is never removed; that is its keeper's business.
 *   Such dirs are named with KEPT_DIR_PREFIX, which the sweep skips, so one stays even without an
 *   owner file (writing it failed); `keep` in the owner file covers `cairn-qsd-` dirs kept by
 *   older versions.
 * - A dir without a readable `owner` file (one being created right now, or left by a caller that
 *   died between making the dir and writing the file, or by an older version) is removed only when
 *   all of these hold: its name is one mkdtemp makes (`cairn-qsd-` and six letters or digits); it
 *   is a directory of this process's user, not a link; neither it nor anything directly in it was
 *   modified in the last OWNERLESS_GRACE_MS (10 minutes; a dir being set up gets its owner file
 *   within moments); and no unix socket in it accepts a connection (a daemon still serving there,
 *   even a stopped one, whose socket the kernel still queues for, keeps it). A socket that cannot
 *   be judged (no answer in time, a permission error) counts as live. The QMP socket
 *   (QMP_SOCKET_NAME) is tried first and the others only while none answered: a monitor takes a
 *   connection that leaves at once without a word, where an NBD server logs a failed negotiation
 *   into the live daemon's log.
 * Never throws: a dir that cannot be read or removed is skipped.
 */
import { lstat, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { currentOwner } from '@cairn/core';
import { processStateLetter } from './process-state.js';

/** Prefix of the daemons' temp dirs, the ones the sweep judges. */
export const DIR_PREFIX = 'cairn-qsd-';
/**
 * Prefix of the temp dir of a daemon started with `keepDir`: the dir is the caller's to remove, so
 * its name alone keeps it from the sweep, also when its owner file (with `keep`) was never written.
 * As long as DIR_PREFIX, so the socket paths in it are as long (assertTmpParentFits holds for both).
 */
export const KEPT_DIR_PREFIX = 'cairn-qsk-';
/** The daemon's QMP socket in its temp dir. */
export const QMP_SOCKET_NAME = 'qmp.sock';
const OWNER_FILE = 'owner';
/** How old (by mtime) an owner-less dir and everything in it must be before it may be removed. */
export const OWNERLESS_GRACE_MS = 10 * 60 * 1000;
/** How long a socket in an owner-less dir may take to accept a connection before it counts as live. */
const SOCKET_PROBE_MS = 1_000;
/** What mkdtemp appends to DIR_PREFIX. */
const MKDTEMP_NAME = /^[A-Za-z0-9]{6}$/;

interface Owner {
  pid: number;
  daemonPid?: number;
  /** Inode of the owner's pid namespace (`pid:[N]`); absent where /proc cannot tell, and in older owner files. */
  pidNamespace?: number;
  /** Kept on purpose (`keepDir`): never removed as stale. */
  keep?: true;
}

/** Records this process (and the daemon) as the owner of `dir`; `keep` marks a dir kept on purpose. */
export async function writeOwner(dir: string, daemonPid: number | undefined, keep = false): Promise<void> {
  const { pidNamespace } = currentOwner();
  const owner: Owner = { pid: process.pid, ...(daemonPid ? { daemonPid } : {}), ...(pidNamespace !== undefined ? { pidNamespace } : {}), ...(keep ? { keep } : {}) };
  await writeFile(join(dir, OWNER_FILE), JSON.stringify(owner));
}

/** Removes the temp dirs under `parent` left behind (rules in the file comment) and returns their paths. Never throws. */
export async function removeStaleDirs(parent: string): Promise<string[]> {
  const removed: string[] = [];
  const names = await readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(DIR_PREFIX)) continue;
    const dir = join(parent, name);
    const owner = await readOwner(dir);
    if (!owner) {
      if (!MKDTEMP_NAME.test(name.slice(DIR_PREFIX.length)) || !(await ownerlessDirIsAbandoned(dir))) continue;
    } else if (owner.keep || ownerMayRun(owner)) continue;
    // Pids of this namespace that are gone mean a dead owner: its sockets decide. An owner of
    // another namespace (or one not recorded) may be starting its daemon, whose sockets do not
    // exist yet: it must also be quiet for the grace, as an owner-less dir.
    else if (ownPidNamespace(owner) ? await socketsMayBeLive(dir) : !(await quietAndUnserved(dir))) continue;
    await rm(dir, { recursive: true, force: true }).then(
      () => removed.push(dir),
      () => undefined,
    );
  }
  return removed;
}

/** Whether the owner-less `dir` may be removed: this user's directory, quiet for the grace, with no live socket. */
async function ownerlessDirIsAbandoned(dir: string): Promise<boolean> {
  try {
    const st = await lstat(dir);
    if (!st.isDirectory() || (process.getuid !== undefined && st.uid !== process.getuid())) return false;
  } catch {
    return false; // vanished or unreadable: not ours to judge now
  }
  return quietAndUnserved(dir);
}

/** Whether `dir` and every entry in it are unmodified for OWNERLESS_GRACE_MS and no socket in it is served. */
async function quietAndUnserved(dir: string): Promise<boolean> {
  try {
    const quietSince = Date.now() - OWNERLESS_GRACE_MS;
    if ((await lstat(dir)).mtimeMs > quietSince) return false;
    for (const entry of await readdir(dir)) if ((await lstat(join(dir, entry))).mtimeMs > quietSince) return false;
    return !(await socketsMayBeLive(dir));
  } catch {
    return false; // vanished or unreadable: not ours to judge now
  }
}

/** Whether `owner` recorded this process's pid namespace (its pids then mean what they say here). */
function ownPidNamespace(owner: Owner): boolean {
  const here = currentOwner().pidNamespace;
  return owner.pidNamespace !== undefined && here !== undefined && owner.pidNamespace === here;
}

/**
 * Whether the owner or its daemon may run, as far as pids tell: its pids are this namespace's (same
 * `pidNamespace`, or not recorded on either side) and one of them is alive. False for an owner of
 * another pid namespace, whose pids tell nothing here (its sockets decide).
 */
function ownerMayRun(owner: Owner): boolean {
  const here = currentOwner().pidNamespace;
  if (owner.pidNamespace !== undefined && here !== undefined && owner.pidNamespace !== here) return false;
  return owner.pid === process.pid || processAlive(owner.pid) || (owner.daemonPid !== undefined && processAlive(owner.daemonPid));
}

/**
 * Whether a unix socket directly in `dir` may be served (socketMayBeLive), the QMP socket asked
 * first and the others only while none answered. True also when `dir` cannot be listed (other
 * than gone): what cannot be judged counts as live.
 */
async function socketsMayBeLive(dir: string): Promise<boolean> {
  const gone = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'ENOENT';
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    return !gone(err);
  }
  const sockets: string[] = [];
  for (const entry of entries) {
    const path = join(dir, entry);
    try {
      if ((await lstat(path)).isSocket()) sockets[entry === QMP_SOCKET_NAME ? 'unshift' : 'push'](path);
    } catch (err) {
      if (!gone(err)) return true; // an entry removed meanwhile is no socket; one that cannot be judged may be
    }
  }
  for (const socket of sockets) if (await socketMayBeLive(socket)) return true;
  return false;
}

/** False only when connecting to the unix socket at `path` is refused (or it is gone): nobody listens. */
function socketMayBeLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ path });
    const done = (live: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(live);
    };
    const timer = setTimeout(() => done(true), SOCKET_PROBE_MS);
    socket.once('connect', () => done(true));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
}

async function readOwner(dir: string): Promise<Owner | undefined> {
  try {
    const o = JSON.parse(await readFile(join(dir, OWNER_FILE), 'utf8')) as Partial<Owner>;
    if (!Number.isInteger(o.pid) || (o.pid as number) <= 0) return undefined;
    if (o.daemonPid !== undefined && (!Number.isInteger(o.daemonPid) || o.daemonPid <= 0)) return undefined;
    // A malformed namespace is ignored (judged as an older owner file: pids, then sockets).
    const pidNamespace = Number.isSafeInteger(o.pidNamespace) && (o.pidNamespace as number) > 0 ? o.pidNamespace : undefined;
    return {
      pid: o.pid!,
      ...(o.daemonPid !== undefined ? { daemonPid: o.daemonPid } : {}),
      ...(pidNamespace !== undefined ? { pidNamespace } : {}),
      ...(o.keep === true ? { keep: true as const } : {}),
    };
  } catch {
    return undefined;
  }
}

/** Whether a process with `pid` runs (EPERM: it does, under another user); a zombie does not. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // No /proc (not Linux), or the process just went: the signal check above is all there is.
  return processStateLetter(pid) !== 'Z';
}
