import { lstat, readdir, rename, rm, unlink } from 'node:fs/promises';
import { syncDir } from '@cairn/core';
import { tryLock } from './file-lock.js';
import { isUuid, type Layout, type RecordKind } from './layout.js';
import type { RecordStore } from './record-store.js';
import { removeSidecarTemps } from './sidecar-temps.js';

/**
 * Deleting a volume or a snapshot, so that a crash at any point leaves nothing that is never
 * removed. The sidecar is renamed `<id>.deleting` (Layout.deleting) first, holding the metadata
 * lock, and durably: from that instant the record is gone (only `<id>.json` names a volume or a
 * snapshot, in any version of the driver). Its image, bitmaps (and a volume's writer lock) are
 * removed next, and the renamed sidecar last. A deletion killed midway (a crash, SIGKILL, a power
 * cut) leaves the renamed sidecar, which says what is left to remove: the next listing finishes it
 * (finishDeletions), as does a retried delete of the same id (finishDeletion). Were the sidecar
 * removed first, a crash before the image went would leave an image nothing names, its space
 * taken for ever (a snapshot's, by a driver version that did so, until the age sweep of
 * snapshot-orphans.ts removes it a day later).
 */

/**
 * Begins the deletion of `kind` `id`: its sidecar renamed `<id>.deleting`, durably. Call holding
 * the image's exclusive lock (which keeps finishDeletions off until removeRecordFiles is done).
 * Throws what rename(2) throws (ENOENT: no sidecar).
 */
export async function markDeleting(store: RecordStore, kind: RecordKind, id: string): Promise<void> {
  const { layout } = store;
  await store.exclusively(async () => {
    await rename(layout.sidecar(kind, id), layout.deleting(kind, id));
    await syncDir(layout.dir(kind));
  });
}

/**
 * Removes what is left of `kind` `id` once markDeleting has run: its image, a volume's writer
 * lock, its bitmap directory, the temp files of its sidecar writes killed midway
 * (sidecar-temps.ts), then its `<id>.deleting` sidecar. `names`, when given, is a listing of
 * the kind's directory read since that sidecar was renamed, in which those temp files are looked
 * up (so a listing that finishes deletions reads the directory once). Each step is idempotent (what is
 * gone already is fine), so a deletion finished twice, or by two processes at once, does no harm.
 */
export async function removeRecordFiles(layout: Layout, kind: RecordKind, id: string, names?: readonly string[]): Promise<void> {
  await rm(layout.image(kind, id), { force: true });
  if (kind === 'volume') await rm(layout.writerLock(id), { force: true });
  await rm(layout.cbtDir(kind, id), { recursive: true, force: true });
  await removeSidecarTemps(layout, kind, id, names);
  await unlink(layout.deleting(kind, id)).catch((err: { code?: string }) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/**
 * Finishes the deletion of `kind` `id` killed midway, if its `<id>.deleting` sidecar is there:
 * removeRecordFiles holding the image's exclusive lock, taken without waiting on a descriptor of
 * its own (an image already gone needs no lock). Resolves to `none` when there is no such sidecar
 * (or `id` is no UUID: nothing is looked up then), `finished` once the files are gone, `busy` when
 * the lock is held elsewhere — a deletion still under way, in another process or instance, left to
 * finish itself. Throws what removing a file throws. `names`: as removeRecordFiles's (a listing
 * in which this deletion's `<id>.deleting` was seen).
 */
export async function finishDeletion(layout: Layout, kind: RecordKind, id: string, driver: string, names?: readonly string[]): Promise<'none' | 'finished' | 'busy'> {
  if (!isUuid(id)) return 'none';
  try {
    await lstat(layout.deleting(kind, id));
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return 'none';
    throw err;
  }
  const lock = await tryLock(layout.image(kind, id), 'exclusive', driver).catch((err: { code?: string }) => {
    if (err.code === 'ENOENT') return 'gone' as const;
    throw err;
  });
  if (!lock) return 'busy';
  try {
    await removeRecordFiles(layout, kind, id, names);
  } finally {
    if (lock !== 'gone') await lock.release();
  }
  return 'finished';
}

/** The ids of the deletions killed midway among `names` (a listing of a kind's directory): `<id>.deleting`, `id` a UUID. */
function deletingIds(names: readonly string[]): string[] {
  const ids: string[] = [];
  for (const name of names) {
    const m = /^(.+)\.deleting$/.exec(name);
    if (m && isUuid(m[1]!)) ids.push(m[1]!);
  }
  return ids;
}

/**
 * Finishes the deletions of `kind` killed midway (a `<id>.deleting` sidecar left in its
 * directory), each by finishDeletion: one still under way (in this process too: the lock is on a
 * descriptor of its own) is left to finish itself. `names` is a listing of that directory the
 * caller has just read (so a listing reads it once: SidecarStore's names);
 * without it the directory is read here. Best effort: never rejects (the next listing tries
 * again); resolves to the ids it finished.
 */
export async function finishDeletions(layout: Layout, kind: RecordKind, driver: string, names?: readonly string[]): Promise<string[]> {
  const listing = names ?? (await readdir(layout.dir(kind)).catch(() => [] as string[]));
  const ids = deletingIds(listing);
  const finished: string[] = [];
  for (const id of ids) {
    try {
      if ((await finishDeletion(layout, kind, id, driver, listing)) === 'finished') finished.push(id);
    } catch {
      // not ours to remove, or gone meanwhile: the next listing looks again
    }
  }
  return finished;
}
