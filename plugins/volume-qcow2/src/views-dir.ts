import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { currentOwner, makeDirectories, ownerMayBeAlive, writeFileAtomic, type ProcessOwner } from '@cairn/core';
import { isUuid, type Layout } from './layout.js';

/** The file in an instance's views directory naming the process that owns it (core's ProcessOwner). */
export const VIEWS_OWNER_FILE = 'owner.json';

/**
 * How long an entry of `views/` that names no owner — an overlay of the older flat layout, or a
 * directory without a readable owner file — must have been left unchanged (newest mtime of it and
 * of what it holds) before a daemon start may remove it: one hour. It only has to outlast the
 * moment such an entry is made and then locked (an overlay created, then opened by its daemon;
 * an older version's directory made, then given its owner file), with room for a stalled
 * daemon. It also bounds the clock skew tolerated on a shared file system: a server whose clock
 * runs behind this host's by more than an hour makes an entry being made look stale (a server
 * clock that runs ahead only makes entries look newer).
 */
export const UNOWNED_VIEWS_GRACE_MS = 60 * 60 * 1000;

/**
 * Whether a process has the image at `path` open, by qemu's lock (QemuImg.lockState): `held`,
 * `free` (nobody has it open for writing, or it is no image qemu can open), or `unknown`.
 */
export type LockProbe = (path: string) => Promise<'held' | 'free' | 'unknown'>;

const isOwner = (v: unknown): v is ProcessOwner => {
  const o = v as Record<string, unknown> | null;
  return !!o && typeof o === 'object' && typeof o.host === 'string' && typeof o.pid === 'number';
};

/**
 * Readies this instance's views directory (`views/<instance>/`) before its daemon starts, and
 * reclaims what others left in `views/`, on a directory other instances (other processes, or
 * other driver instances of this process) may use at the same time:
 *
 * - this instance's overlays are all removed: views never outlive their daemon, and only one
 *   daemon of an instance runs at a time, so whatever is there was left by a daemon that died.
 *   The directory appears with its owner file in it (made under a temporary name, then renamed),
 *   and the owner file is replaced atomically: an instance's directory never lacks a readable
 *   owner file while its process lives;
 * - another instance's directory whose owner file names a process that is provably gone (core's
 *   `ownerMayBeAlive` is false: not running, a reused pid, an earlier boot) is removed (best
 *   effort: see removeViews). One whose owner may be alive (this process included: two instances
 *   in one process), or runs on another host or pid namespace, is left alone;
 * - what names no owner is removed once it is stale: a directory whose owner file is missing or
 *   damaged (left by a crash while it was made, by this or an older version), and an overlay of
 *   the older flat layout (`views/<uuid>.qcow2`), when it has been left unchanged for
 *   UNOWNED_VIEWS_GRACE_MS and no process holds any of its files by qemu's lock (`probe`: a
 *   daemon that has an overlay open, always writable, holds its lock; a file whose lock cannot be
 *   probed counts as held). A directory that holds anything but overlays (`*.qcow2` files) and
 *   its owner file, or whose owner file cannot be read for another reason than its absence (no
 *   permission, I/O error) or is JSON of another shape (a newer version's), is left alone, and so
 *   is any other file in `views/`: nothing tells it is ours.
 *
 * The judgements are made from files other processes may change meanwhile; the grace period is
 * what makes a removal between the check and an owner's first write of the entry out of reach.
 * Idempotent. Errors: those of the file system for this instance's own directory (the caller
 * does not start a daemon); reclaiming others' entries never fails the call.
 */
export async function prepareViewsDir(layout: Layout, probe: LockProbe): Promise<void> {
  await makeDirectories(layout.viewsRoot);
  await readyOwnDir(layout);
  const now = Date.now();
  for (const entry of await readdir(layout.viewsRoot, { withFileTypes: true })) {
    if (entry.name === layout.instance) continue;
    const path = join(layout.viewsRoot, entry.name);
    if (entry.isDirectory()) await sweepViewsOf(path, probe, now);
    else if (entry.isFile() && isFlatOverlay(entry.name) && (await unclaimed(path, [path], probe, now))) await rm(path, { force: true }).catch(() => {});
  }
}

/** An overlay of the older flat layout: `<uuid>.qcow2` right in `views/`. */
function isFlatOverlay(name: string): boolean {
  return name.endsWith('.qcow2') && isUuid(name.slice(0, -'.qcow2'.length));
}

/** Creates this instance's directory with its owner file, or empties it but for that file and rewrites it. */
async function readyOwnDir(layout: Layout): Promise<void> {
  const own = layout.viewsDir;
  const owner = JSON.stringify(currentOwner());
  const exists = await stat(own).then(
    () => true,
    (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? false : Promise.reject(err)),
  );
  if (!exists) {
    const tmp = join(layout.viewsRoot, `.${layout.instance}.${randomBytes(6).toString('hex')}.new`);
    await mkdir(tmp);
    try {
      await writeFileAtomic(join(tmp, VIEWS_OWNER_FILE), owner);
      await rename(tmp, own);
      return;
    } catch (err) {
      await rm(tmp, { recursive: true, force: true }).catch(() => {});
      throw err;
    }
  }
  for (const name of await readdir(own)) if (name !== VIEWS_OWNER_FILE) await rm(join(own, name), { recursive: true, force: true });
  await writeFileAtomic(join(own, VIEWS_OWNER_FILE), owner);
}

/** Another instance's views directory (or one being made): removed when its owner is gone, or when it names none and is unclaimed. */
async function sweepViewsOf(dir: string, probe: LockProbe, now: number): Promise<void> {
  const owner = await readFile(join(dir, VIEWS_OWNER_FILE), 'utf8').then(
    (text) => {
      try {
        const parsed = JSON.parse(text) as unknown;
        // JSON of another shape may be a newer version's owner file: it is left alone.
        return isOwner(parsed) ? parsed : 'unreadable';
      } catch {
        return 'none'; // damaged (an older version's directory whose owner file was being written): names nobody
      }
    },
    (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? 'none' : 'unreadable'),
  );
  if (owner === 'unreadable') return;
  if (owner !== 'none') {
    if (!ownerMayBeAlive(owner)) await removeViews(dir);
    return;
  }
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => undefined);
  // Only overlays (and a damaged owner file) are judged; any other file is not ours to judge.
  if (!entries || entries.some((e) => !e.isFile() || (e.name !== VIEWS_OWNER_FILE && !e.name.endsWith('.qcow2')))) return;
  if (await unclaimed(dir, entries.map((e) => join(dir, e.name)), probe, now)) await removeViews(dir);
}

/**
 * Whether an entry that names no owner may go: `entry` and `files` (the files it is made of) have
 * all been left unchanged for UNOWNED_VIEWS_GRACE_MS, and the probe finds each file free (but a
 * damaged owner file, which is no image). Any doubt (a stat or a probe that fails) keeps it.
 */
async function unclaimed(entry: string, files: string[], probe: LockProbe, now: number): Promise<boolean> {
  try {
    const times = await Promise.all([entry, ...files].map(async (p) => (await stat(p)).mtimeMs));
    if (now - Math.max(...times) < UNOWNED_VIEWS_GRACE_MS) return false;
  } catch {
    return false;
  }
  for (const file of files) if (basename(file) !== VIEWS_OWNER_FILE && (await probe(file)) !== 'free') return false;
  return true;
}

/**
 * Removes another instance's views directory, best effort: one this process cannot remove
 * (another user's, immutable) never stands in the way of this instance's daemon, and is tried
 * again at the next start. The owner file goes last, so a directory left part-emptied still
 * names its dead owner.
 */
async function removeViews(dir: string): Promise<void> {
  try {
    for (const name of await readdir(dir)) if (name !== VIEWS_OWNER_FILE) await rm(join(dir, name), { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  } catch {
    // Left for a later start (see above).
  }
}

/** Removes this instance's views directory with every overlay in it (its daemon has stopped). Idempotent. */
export async function removeViewsDir(layout: Layout): Promise<void> {
  await rm(layout.viewsDir, { recursive: true, force: true });
}
