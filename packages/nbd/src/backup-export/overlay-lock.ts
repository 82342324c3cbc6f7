import { randomUUID } from 'node:crypto';
import { link, rename, unlink, writeFile } from 'node:fs/promises';
import { CairnError, currentOwner, linkIfAbsent, ownerMayBeAlive, quotedCut, readBounded, tempPathBeside, toCairnError, type ProcessOwner } from '@cairn/core';
import { SHOWN_NAME } from '../nbd-string.js';

/** The most of a lock file read: its JSON is a few hundred bytes. */
const LOCK_FILE_LIMIT = 64 * 1024;

const DRIVER = 'backup-export';
/** Tries to take over a lock whose owner is dead before giving up (each try loses only to another process taking it). */
const TRIES = 3;

/** A held overlay lock; `release()` removes it (idempotent, never throws). */
export interface OverlayLock {
  release(): Promise<void>;
}

/**
 * Takes the lock of the overlay at `path`: the file `<path>.lock`, holding the owner (process
 * identity, as job records and repository locks name theirs). It appears whole or not at all (a
 * private file hard-linked into place, which fails if the lock exists), so of processes taking
 * one overlay at once exactly one gets it. `CONFLICT` while a process that may be alive holds it
 * (on this host, another host or another pid namespace: judged by `ownerMayBeAlive`); a lock left
 * by a process that is certainly gone (SIGKILL, a crash) is taken over (moved aside, checked
 * again, removed). An unreadable lock file counts as held: remove it by hand once no process
 * serves the overlay.
 */
export async function lockOverlay(path: string): Promise<OverlayLock> {
  const lockPath = `${path}.lock`;
  const mine = tempPathBeside(lockPath);
  try {
    await writeFile(mine, JSON.stringify({ owner: currentOwner() }), { flag: 'wx', mode: 0o600 });
    for (let attempt = 0; attempt < TRIES; attempt++) {
      if (await linkIfAbsent(mine, lockPath)) {
        let released = false;
        return {
          release: async () => {
            if (released) return;
            released = true;
            await unlink(lockPath).catch(() => undefined);
          },
        };
      }
      const owner = await readOwner(lockPath);
      if (owner === null) continue; // gone meanwhile: try again
      if (owner === undefined || ownerMayBeAlive(owner)) {
        throw inUse(path, lockPath, owner);
      }
      // Moved aside, then judged again: if another process took the dead lock over between our
      // read and the rename, what was moved is its live lock, which goes back into place.
      const aside = `${lockPath}.${randomUUID()}.stale`;
      try {
        await rename(lockPath, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const moved = await readOwner(aside);
      if (moved && ownerMayBeAlive(moved)) {
        await link(aside, lockPath).catch(() => undefined);
        await unlink(aside).catch(() => undefined);
        throw inUse(path, lockPath, moved);
      }
      await unlink(aside).catch(() => undefined);
    }
    throw new CairnError('CONFLICT', `overlay ${path} is being taken by another process`, { driver: DRIVER, details: { lock: lockPath } });
  } catch (err) {
    throw toCairnError(err, DRIVER, `lock overlay ${path}`);
  } finally {
    await unlink(mine).catch(() => undefined);
  }
}

/**
 * `CONFLICT`: the overlay at `path` is held by `owner` (undefined: the lock file is unreadable). The
 * host name comes from the lock file, which anything may have written: it is quoted, cut to
 * SHOWN_NAME code points and its control characters escaped (core's quotedCut).
 */
function inUse(path: string, lockPath: string, owner: ProcessOwner | undefined): CairnError {
  const who = owner ? ` by process ${owner.pid} on ${quotedCut(owner.host, SHOWN_NAME)}` : ' (its lock file is unreadable)';
  return new CairnError('CONFLICT', `overlay ${path} is in use${who}`, { driver: DRIVER, details: { lock: lockPath } });
}

/** The lock's owner; null when the file is gone, undefined when it is unreadable. */
async function readOwner(lockPath: string): Promise<ProcessOwner | null | undefined> {
  try {
    // A lock file is a small JSON document; a larger one is unreadable, not read until memory runs out.
    const doc = JSON.parse((await readBounded(lockPath, LOCK_FILE_LIMIT, 'overlay lock file')).toString('utf8')) as { owner?: ProcessOwner };
    return doc.owner && typeof doc.owner.pid === 'number' && typeof doc.owner.host === 'string' ? doc.owner : undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? null : undefined;
  }
}
