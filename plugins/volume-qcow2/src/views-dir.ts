import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { currentOwner, ownerMayBeAlive, type ProcessOwner } from '@cairn/core';
import type { Layout } from './layout.js';

/** The file in an instance's views directory naming the process that owns it (core's ProcessOwner). */
export const VIEWS_OWNER_FILE = 'owner.json';

const isOwner = (v: unknown): v is ProcessOwner => {
  const o = v as Record<string, unknown> | null;
  return !!o && typeof o === 'object' && typeof o.host === 'string' && typeof o.pid === 'number';
};

/**
 * Readies this instance's views directory (`views/<instance>/`) before its daemon starts, on a
 * directory other instances (other processes, or other driver instances of this process) may use
 * at the same time:
 *
 * - this instance's overlays are all removed: views never outlive their daemon, and only one
 *   daemon of an instance runs at a time, so whatever is there was left by a daemon that died;
 * - another instance's directory is removed (best effort: see removeDeadViews) only when its
 *   owner file names a process that is provably gone (core's `ownerMayBeAlive` is false: not running, a reused pid, an earlier boot).
 *   One whose owner may be alive (this process included: two instances in one process), runs on
 *   another host or pid namespace, or cannot be read (being created, damaged) is left alone;
 * - anything else in `views/` (files of the older flat layout) is left alone: nothing tells whose
 *   it is.
 *
 * Idempotent. Errors: those of the file system (the caller does not start a daemon).
 */
export async function prepareViewsDir(layout: Layout): Promise<void> {
  const own = layout.viewsDir;
  await mkdir(own, { recursive: true });
  for (const name of await readdir(own)) if (name !== VIEWS_OWNER_FILE) await rm(join(own, name), { recursive: true, force: true });
  await writeFile(join(own, VIEWS_OWNER_FILE), JSON.stringify(currentOwner()));
  for (const entry of await readdir(layout.viewsRoot, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === layout.instance) continue;
    const dir = join(layout.viewsRoot, entry.name);
    const owner = await readFile(join(dir, VIEWS_OWNER_FILE), 'utf8').then(
      (text) => JSON.parse(text) as unknown,
      () => undefined,
    ).catch(() => undefined);
    if (isOwner(owner) && !ownerMayBeAlive(owner)) await removeDeadViews(dir);
  }
}

/**
 * Removes a dead instance's views directory, best effort: one this process cannot remove (another
 * user's, immutable) never stands in the way of this instance's daemon, and is tried again at the
 * next start. The owner file goes last, so a directory left part-emptied still names its dead
 * owner.
 */
async function removeDeadViews(dir: string): Promise<void> {
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
