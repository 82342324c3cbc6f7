import { readdirSync, rmSync } from 'node:fs';
import { lstat, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { currentOwner, ownerMayBeAlive, writeFileAtomic, type ProcessOwner } from '@cairn/core';

/**
 * Private temporary directories that name their owner, so that those a killed process left behind
 * (SIGKILL, the OOM killer, a crash: no cleanup ran) are removed by the next command that makes one
 * of the same kind: archive stagings (`cairn-archive-`), `volume import`'s conversion
 * (`cairn-import-`) and `volume export`'s (`cairn-export-`), `backup serve`'s socket when its
 * default path is too long (`cairn-serve-`: serve-socket.ts), and the partial file of a volume or
 * archive export, an exported record or `cairn init`'s config, beside the file it becomes
 * (`.cairn-partial-`: partial-file.ts).
 */

/** The owner file in each directory: `{format, owner: ProcessOwner, createdAt}`. */
export const OWNER_FILE = 'cairn-staging.json';
const OWNER_FORMAT = 'cairn-staging/1';
/** An owner file is a few hundred bytes; anything much larger is not one. */
const MAX_OWNER_FILE = 64 * 1024;

/**
 * The kinds of owned directory: `<prefix>XXXXXX`, as mkdtemp names them. `.cairn-partial-` is
 * made beside a file being written whole (`volume export`, `backup export --archive`, `cairn
 * init`'s config: createPartialFile), to hold it until renamed.
 */
export type OwnedTempPrefix = 'cairn-archive-' | 'cairn-import-' | 'cairn-export-' | 'cairn-serve-' | '.cairn-partial-';

/**
 * Makes `<parent>/<prefix>XXXXXX` (mode 0700; `parent` default: the system temporary directory,
 * `os.tmpdir()`) holding its owner file, written atomically before the caller puts anything in
 * it, and returns its path. First removes the directories of `prefix` whose owner is certainly
 * dead (removeDeadTempDirs). A failure to write the owner file removes the directory and rejects
 * with it; nothing is left behind. The caller removes the directory when done, by
 * removeOwnedTempDir (or removeOwnedTempDirSync), never by a plain recursive rm: the owner file
 * must go last.
 */
export async function createOwnedTempDir(prefix: OwnedTempPrefix, parent: string = tmpdir()): Promise<string> {
  await removeDeadTempDirs(prefix, parent);
  const dir = await mkdtemp(join(parent, prefix));
  try {
    // The owner first: a directory without one is removed by another process's sweep only once quiet for OWNERLESS_GRACE_MS.
    await writeFileAtomic(join(dir, OWNER_FILE), JSON.stringify({ format: OWNER_FORMAT, owner: currentOwner(), createdAt: new Date().toISOString() }));
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return dir;
}

/** How long (by mtime) an owner-less directory and the owner file's temporary files in it must have been quiet before a sweep removes it. */
export const OWNERLESS_GRACE_MS = 10 * 60 * 1000;

/**
 * Removes from `parent` the directories of `prefix` that were left behind, and returns their
 * paths. Only a directory whose name is one createOwnedTempDir makes (`prefix` and six letters or
 * digits, as mkdtemp names them) that is a directory, not a link, of this process's user is
 * considered; then:
 * - With a regular file `cairn-staging.json` of the owner format naming a well-formed owner, it is
 *   removed when core's `ownerMayBeAlive` says that owner no longer runs (on this host and in this
 *   pid namespace: no process has its pid, or its pid now runs with another start time, or the
 *   owner ran in an earlier boot). An owner of another host, of another machine under this host
 *   name (another machine id) or of another pid namespace (it cannot be judged from here) or a
 *   live one keeps it.
 * - Without any `cairn-staging.json`, it is removed only when it holds nothing but the owner
 *   file's temporary files (`.cairn-staging.json.<random>.tmp`, writeFileAtomic's), if anything,
 *   and neither it nor they were modified (mtime) in the last OWNERLESS_GRACE_MS (10 minutes):
 *   that is all a process killed between making the directory and writing its owner file leaves,
 *   or one killed while removing it (removeOwnedTempDir takes the owner file last), and a
 *   directory being set up gets its owner file within moments, so a quiet one is abandoned. An
 *   owner-less directory holding anything else is not one of these: a directory of the user's
 *   that happens to have such a name (a script's `mktemp -d -t cairn-export-XXXXXX`) is kept.
 * - Anything else is left alone: a `cairn-staging.json` that is not a readable owner (another
 *   format, e.g. a newer version's, or not a regular file) cannot be judged.
 * Never throws: a directory that cannot be read or removed is skipped (another process's sweep may
 * be removing it; the next sweep tries again).
 */
export async function removeDeadTempDirs(prefix: OwnedTempPrefix, parent: string = tmpdir()): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix) || !/^[A-Za-z0-9]{6}$/.test(name.slice(prefix.length))) continue;
    const dir = join(parent, name);
    try {
      const st = await lstat(dir);
      if (!st.isDirectory() || (process.getuid !== undefined && st.uid !== process.getuid())) continue;
      const owner = await dirOwner(dir);
      if (owner === 'none' ? !(await abandonedOwnerless(dir, Date.now() - OWNERLESS_GRACE_MS)) : !owner || ownerMayBeAlive(owner)) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      /* vanished, unreadable or not removable: not ours to judge now */
    }
  }
  return removed;
}

/** The names of writeFileAtomic's temporary files of the owner file (`.<name>.<12 hex digits>.tmp`: core's tempPathBeside). */
const OWNER_TEMP = /^\.cairn-staging\.json\.[0-9a-f]{12}\.tmp$/;

/**
 * Whether the owner-less directory `dir` is an abandoned one of ours: it holds nothing but
 * regular files named as the owner file's temporary files, and neither it nor they were modified
 * (mtime) after `since` (ms since the epoch).
 */
async function abandonedOwnerless(dir: string, since: number): Promise<boolean> {
  if ((await lstat(dir)).mtimeMs > since) return false;
  for (const name of await readdir(dir)) {
    if (!OWNER_TEMP.test(name)) return false;
    const st = await lstat(join(dir, name));
    if (!st.isFile() || st.mtimeMs > since) return false;
  }
  return true;
}

/**
 * Removes the owned directory `dir` (createOwnedTempDir) and what it holds, its owner file last,
 * so that a process killed part-way leaves either its owner file (the directory is removed by a
 * sweep once its owner is dead) or nothing but an empty directory (removed once quiet: see
 * removeDeadTempDirs). A missing `dir` is no error. Rejects with the system error when something
 * in it cannot be removed; the owner file then stays, naming this process.
 */
export async function removeOwnedTempDir(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const name of names) if (name !== OWNER_FILE) await rm(join(dir, name), { recursive: true, force: true });
  await rm(join(dir, OWNER_FILE), { force: true });
  await rm(dir, { recursive: true, force: true });
}

/** removeOwnedTempDir, synchronously: for a signal handler that ends the process. Throws as it rejects. */
export function removeOwnedTempDirSync(dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const name of names) if (name !== OWNER_FILE) rmSync(join(dir, name), { recursive: true, force: true });
  rmSync(join(dir, OWNER_FILE), { force: true });
  rmSync(dir, { recursive: true, force: true });
}

/** The owner the directory `dir` names in a well-formed owner file; 'none' when it has no owner file; undefined when the file is not a readable owner. */
async function dirOwner(dir: string): Promise<ProcessOwner | 'none' | undefined> {
  const file = join(dir, OWNER_FILE);
  const fst = await lstat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (fst === undefined) return 'none';
  if (!fst.isFile() || fst.size > MAX_OWNER_FILE) return undefined;
  const doc = JSON.parse(await readFile(file, 'utf8')) as unknown;
  if (!isRecord(doc) || doc.format !== OWNER_FORMAT || !isRecord(doc.owner)) return undefined;
  const { host, pid, startTime, bootId, pidNamespace, machineId } = doc.owner;
  const count = (v: unknown, min: number) => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;
  if (typeof host !== 'string' || host === '' || !count(pid, 1)) return undefined;
  if ((startTime !== undefined && !count(startTime, 0)) || (pidNamespace !== undefined && !count(pidNamespace, 0))) return undefined;
  const text = (v: unknown) => v === undefined || (typeof v === 'string' && v !== '');
  if (!text(bootId) || !text(machineId)) return undefined;
  return { host, pid: pid as number, startTime: startTime as number | undefined, bootId: bootId as string | undefined, pidNamespace: pidNamespace as number | undefined, machineId: machineId as string | undefined };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
