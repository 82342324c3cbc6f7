import { lstat, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { currentOwner, ownerMayBeAlive, writeFileAtomic, type Attachment, type ProcessOwner } from '@cairn/core';
import { FileVolumeDriver } from '@cairn/volume-file';

/** Staging directories are `<parent>/cairn-archive-XXXXXX`, as mkdtemp names them. */
const PREFIX = 'cairn-archive-';
const STAGING_NAME = /^cairn-archive-[A-Za-z0-9]{6}$/;
/** The owner file in each staging directory: `{format, owner: ProcessOwner, createdAt}`. */
export const STAGING_OWNER_FILE = 'cairn-staging.json';
const STAGING_FORMAT = 'cairn-staging/1';
/** An owner file is a few hundred bytes; anything much larger is not one. */
const MAX_OWNER_FILE = 64 * 1024;

/**
 * A private sparse volume in a temporary directory (a `file` driver of its own), where an
 * archive's data is assembled before export or checked before import. Nothing outside the
 * temporary directory is touched; `dispose()` removes it (idempotent).
 *
 * A process killed before `dispose()` (SIGKILL, OOM, a crash) leaves its directory behind, so the
 * directory names its owner (`cairn-staging.json`: core's ProcessOwner of the creating process,
 * written atomically before any data) and every `create` first removes the staging directories
 * of owners that are certainly dead (see `removeDeadStagings`).
 */
export class StagingVolume {
  private constructor(
    readonly driver: FileVolumeDriver,
    readonly volumeId: string,
    private readonly dir: string,
  ) {}

  /**
   * `size` must be a positive multiple of 512 (`INVALID_INPUT` otherwise). `parent` is the
   * directory the staging goes in (default: the system temporary directory, `os.tmpdir()`).
   */
  static async create(size: number, parent: string = tmpdir()): Promise<StagingVolume> {
    await removeDeadStagings(parent);
    const dir = await mkdtemp(join(parent, PREFIX));
    try {
      // The owner first: a directory without one is never removed by another process's sweep.
      await writeFileAtomic(join(dir, STAGING_OWNER_FILE), JSON.stringify({ format: STAGING_FORMAT, owner: currentOwner(), createdAt: new Date().toISOString() }));
      const driver = new FileVolumeDriver({ directory: dir });
      const v = await driver.createVolume({ size, name: 'staging' });
      return new StagingVolume(driver, v.id, dir);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  attach(mode: 'ro' | 'rw'): Promise<Attachment> {
    return this.driver.attach({ kind: 'volume', id: this.volumeId }, mode);
  }

  async dispose(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * Removes from `parent` the staging directories whose owner is certainly dead, and returns their
 * paths. A directory is removed only when all of these hold: its name is one `create` makes
 * (`cairn-archive-` and six letters or digits); it is a directory, not a link, of this process's
 * user; it holds a regular file `cairn-staging.json` of the staging format naming a well-formed
 * owner; and core's `ownerMayBeAlive` says that owner no longer runs (on this host and in this
 * pid namespace: no process has its pid, or its pid now runs with another start time, or the owner
 * ran in an earlier boot). Everything else is left alone: an owner of another host or pid
 * namespace (it cannot be judged from here), a live one, a directory without a readable owner
 * (one being created, or left by an older version), anything that is not a staging directory.
 * Never throws: a directory that cannot be read or removed is skipped (a concurrent sweep of
 * another process may be removing it; the next sweep tries again).
 */
export async function removeDeadStagings(parent: string = tmpdir()): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!STAGING_NAME.test(name)) continue;
    const dir = join(parent, name);
    try {
      const owner = await stagingOwner(dir);
      if (!owner || ownerMayBeAlive(owner)) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      /* vanished, unreadable or not removable: not ours to judge now */
    }
  }
  return removed;
}

/** The owner `dir` names when it is a staging directory of this user with a well-formed owner file; undefined otherwise. */
async function stagingOwner(dir: string): Promise<ProcessOwner | undefined> {
  const st = await lstat(dir);
  if (!st.isDirectory() || (process.getuid !== undefined && st.uid !== process.getuid())) return undefined;
  const file = join(dir, STAGING_OWNER_FILE);
  const fst = await lstat(file);
  if (!fst.isFile() || fst.size > MAX_OWNER_FILE) return undefined;
  const doc = JSON.parse(await readFile(file, 'utf8')) as unknown;
  if (!isRecord(doc) || doc.format !== STAGING_FORMAT || !isRecord(doc.owner)) return undefined;
  const { host, pid, startTime, bootId, pidNamespace } = doc.owner;
  const count = (v: unknown, min: number) => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;
  if (typeof host !== 'string' || host === '' || !count(pid, 1)) return undefined;
  if ((startTime !== undefined && !count(startTime, 0)) || (pidNamespace !== undefined && !count(pidNamespace, 0))) return undefined;
  if (bootId !== undefined && (typeof bootId !== 'string' || bootId === '')) return undefined;
  return { host, pid: pid as number, startTime: startTime as number | undefined, bootId: bootId as string | undefined, pidNamespace: pidNamespace as number | undefined };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
