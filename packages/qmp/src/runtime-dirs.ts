/**
 * Ownership of the daemons' temp dirs (`<parent>/cairn-qsd-XXXXXX`). Each dir gets an `owner`
 * file naming the Node process that created it and the daemon's pid. `removeStaleDirs` removes
 * the dirs whose owner and daemon are both gone (a caller killed before it could clean up), so
 * sockets and logs do not pile up. A dir without an `owner` file (being created right now, or
 * made by an older version) or with any process alive is left alone; a reused pid only delays a
 * removal, never causes a wrong one. So is a dir kept on purpose (`keep`: the daemon was started
 * with `keepDir`, whose log is there to be read after the daemon and its caller are gone);
 * removing it is its keeper's business.
 */
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { processStateLetter } from './process-state.js';

/** Prefix of every daemon temp dir. */
export const DIR_PREFIX = 'cairn-qsd-';
const OWNER_FILE = 'owner';

interface Owner {
  pid: number;
  daemonPid?: number;
  /** Kept on purpose (`keepDir`): never removed as stale. */
  keep?: true;
}

/** Records this process (and the daemon) as the owner of `dir`; `keep` marks a dir kept on purpose. */
export async function writeOwner(dir: string, daemonPid: number | undefined, keep = false): Promise<void> {
  const owner: Owner = { pid: process.pid, ...(daemonPid ? { daemonPid } : {}), ...(keep ? { keep } : {}) };
  await writeFile(join(dir, OWNER_FILE), JSON.stringify(owner));
}

/** Removes the temp dirs under `parent` whose owner process and daemon have both exited. Never throws. */
export async function removeStaleDirs(parent: string): Promise<string[]> {
  const removed: string[] = [];
  const names = await readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(DIR_PREFIX)) continue;
    const dir = join(parent, name);
    const owner = await readOwner(dir);
    if (!owner || owner.keep || owner.pid === process.pid || processAlive(owner.pid) || (owner.daemonPid !== undefined && processAlive(owner.daemonPid))) continue;
    await rm(dir, { recursive: true, force: true }).then(
      () => removed.push(dir),
      () => undefined,
    );
  }
  return removed;
}

async function readOwner(dir: string): Promise<Owner | undefined> {
  try {
    const o = JSON.parse(await readFile(join(dir, OWNER_FILE), 'utf8')) as Partial<Owner>;
    if (!Number.isInteger(o.pid) || (o.pid as number) <= 0) return undefined;
    if (o.daemonPid !== undefined && (!Number.isInteger(o.daemonPid) || o.daemonPid <= 0)) return undefined;
    return { pid: o.pid!, ...(o.daemonPid !== undefined ? { daemonPid: o.daemonPid } : {}), ...(o.keep === true ? { keep: true as const } : {}) };
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
