import { readdir, rename, rm, unlink } from 'node:fs/promises';
import { syncDir } from '@cairn/core';
import { tryLock } from './file-lock.js';
import { isUuid, type Layout } from './layout.js';
import type { RecordStore } from './record-store.js';

/**
 * Deleting a volume, so that a crash at any point leaves nothing that is never removed. The
 * sidecar is renamed `<id>.deleting` (Layout.deleting) first, holding the metadata lock, and
 * durably: from that instant the volume is gone (only `<id>.json` names a volume, in any version
 * of the driver). Its image, writer lock and bitmaps are removed next, and the renamed sidecar
 * last. A deletion killed midway (a crash, SIGKILL, a power cut) leaves the renamed sidecar, which
 * says what is left to remove: the next listing finishes it (finishDeletions). Were the sidecar
 * removed first, a crash before the image went would leave an image nothing names, its space
 * taken for ever.
 */

/**
 * Begins the deletion of volume `id`: its sidecar renamed `<id>.deleting`, durably. Call holding
 * the image's exclusive lock (which keeps finishDeletions off until removeVolumeFiles is done).
 * Throws what rename(2) throws (ENOENT: no sidecar).
 */
export async function markDeleting(store: RecordStore, id: string): Promise<void> {
  const { layout } = store;
  await store.exclusively(async () => {
    await rename(layout.sidecar('volume', id), layout.deleting(id));
    await syncDir(layout.dir('volume'));
  });
}

/**
 * Removes what is left of volume `id` once markDeleting has run: its image, writer lock and
 * bitmap directory, then its `<id>.deleting` sidecar. Each step is idempotent (what is gone
 * already is fine), so a deletion finished twice, or by two processes at once, does no harm.
 */
export async function removeVolumeFiles(layout: Layout, id: string): Promise<void> {
  await rm(layout.image('volume', id), { force: true });
  await rm(layout.writerLock(id), { force: true });
  await rm(layout.cbtDir('volume', id), { recursive: true, force: true });
  await unlink(layout.deleting(id)).catch((err: { code?: string }) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/**
 * Finishes the deletions killed midway in `volumes/` (a `<id>.deleting` sidecar left): for each,
 * removeVolumeFiles, holding the image's exclusive lock without waiting — a deletion still under
 * way (in this process too: the lock is taken on a descriptor of its own) holds it, and is left to
 * finish itself. An image already gone needs no lock. Best effort: never rejects (the next listing
 * tries again); resolves to the ids it finished.
 */
export async function finishDeletions(layout: Layout, driver: string): Promise<string[]> {
  const names = await readdir(layout.dir('volume')).catch(() => [] as string[]);
  const finished: string[] = [];
  for (const name of names) {
    const m = /^(.+)\.deleting$/.exec(name);
    if (!m || !isUuid(m[1]!)) continue;
    const id = m[1]!;
    try {
      const lock = await tryLock(layout.image('volume', id), 'exclusive', driver).catch((err: { code?: string }) => {
        if (err.code === 'ENOENT') return 'gone' as const;
        throw err;
      });
      if (!lock) continue; // its deleter is alive
      try {
        await removeVolumeFiles(layout, id);
      } finally {
        if (lock !== 'gone') await lock.release();
      }
      finished.push(id);
    } catch {
      // not ours to remove, or gone meanwhile: the next listing looks again
    }
  }
  return finished;
}
