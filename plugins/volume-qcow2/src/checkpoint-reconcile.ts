import type { CairnError } from '@cairn/core';
import { actions, type BlockDirtyInfo, type TransactionAction } from '@cairn/qmp';
import { chainTransaction } from './chain-transaction.js';
import type { DaemonSession } from './daemon-session.js';
import type { RecordStore } from './record-store.js';
import { imageSize } from './volume-extend.js';
import type { CheckpointRecord } from './records.js';

/**
 * Makes the sidecar agree with the persistent bitmaps of the volume's node: when the node was
 * just opened (what qemu loaded from the image), or when it is unsettled. Rules:
 *
 * 1. A checkpoint is lost when the sidecar marks it not consistent, or its bitmap is missing
 *    (created in a daemon that was killed) or `inconsistent` (the daemon died while the image
 *    was open); every older one is lost with it (their unions would miss its writes).
 * 2. Persistent bitmaps the sidecar does not know ("strays") come from a chain change whose
 *    sidecar write never happened: addCheckpoint's transaction disabled the newest checkpoint
 *    and added the stray, which records from that same instant. The writes since the newest
 *    checkpoint are thus in it or in the strays, so ONE transaction merges every stray into it,
 *    re-enables it and removes the strays (no write can fall between).
 * 3. If the newest kept checkpoint is not recording and no stray is, writes since it was disabled
 *    may have been recorded nowhere we still have: it is lost (and every older one). So is it when
 *    a stray is inconsistent (it cannot be merged).
 * 0. When the image's size is not the sidecar's, every checkpoint is lost: the image was resized
 *    outside the driver (`qemu-img resize`, which keeps the bitmaps but cannot mark a new tail
 *    dirty, and drops the bits of a cut one), or by an extend that died after `block_resize`
 *    (which made every checkpoint lost before resizing). addCheckpoint brings the sidecar's size
 *    to the image's, so a checkpoint made after that is kept.
 * 4. Before all that, a checkpoint whose bitmap is missing but whose removal this daemon was sent
 *    (DaemonSession.removalsOf: the transaction's reply or the sidecar write failed) is dropped
 *    from the sidecar: that atomic transaction ran, so its bitmap was merged where it belonged.
 *
 * Why merging (2) instead of declaring the chain lost: a merge only adds dirty bits, so the
 * answer for a kept checkpoint is a superset of the writes since it (never an under-report), and
 * the next backup stays incremental. Rule 3 covers every state a merge cannot vouch for.
 *
 * Lost checkpoints stay in the sidecar with `consistent: false` (`extents(changed)` since them
 * fails with NOT_FOUND); their bitmaps and inconsistent strays are removed; the newest kept
 * checkpoint is made the only one recording. Non-persistent bitmaps (temporary query and view
 * bitmaps) are never touched. Idempotent.
 */
export async function reconcileCheckpoints(session: DaemonSession, node: string, store: RecordStore, volumeId: string): Promise<void> {
  const path = store.layout.image('volume', volumeId);
  const removed = session.removalsOf(path);
  const loaded = new Map((await session.bitmaps(node)).filter((b) => b.name && b.persistent).map((b) => [b.name!, b]));
  const record = await store.volume(volumeId);
  const known = new Set(record.checkpoints.map((c) => c.id));
  const strays = [...loaded.values()].filter((b) => !known.has(b.name!));
  const gone = new Set([...removed].filter((id) => known.has(id) && !loaded.has(id)));
  const checkpoints = record.checkpoints.filter((c) => !gone.has(c.id));

  const resized = (await imageSize(session, node, store.driverName)) !== record.size;
  const lost = resized ? checkpoints.length - 1 : newestLost(checkpoints, loaded, strays);
  const kept = checkpoints.slice(lost + 1);
  const keep = new Set(kept.map((c) => c.id));

  // Bitmaps of lost checkpoints (and strays, when nothing is kept) go first, one by one:
  // inconsistent bitmaps refuse every use but removal.
  const merged = kept.length ? strays : [];
  const drop = [...loaded.values()].filter((b) => !keep.has(b.name!) && !merged.includes(b));
  for (const b of drop) await removeBitmap(session, node, b);

  const steps: TransactionAction[] = [];
  kept.forEach((c, i) => {
    const recording = loaded.get(c.id)!.recording;
    const isNewest = i === kept.length - 1;
    if (isNewest && merged.length) steps.push(actions.bitmapMerge({ node, target: c.id, bitmaps: merged.map((b) => b.name!) }));
    if (isNewest && !recording) steps.push(actions.bitmapEnable({ node, name: c.id }));
    if (!isNewest && recording) steps.push(actions.bitmapDisable({ node, name: c.id }));
  });
  for (const b of merged) steps.push(actions.bitmapRemove({ node, name: b.name! }));
  if (steps.length) await chainTransaction(session, node, steps);

  if (gone.size > 0 || (lost >= 0 && checkpoints.slice(0, lost + 1).some((c) => c.consistent))) {
    await store.updateVolume(volumeId, (r) => {
      r.checkpoints = r.checkpoints.filter((c) => !gone.has(c.id));
      for (const c of r.checkpoints) if (!keep.has(c.id)) c.consistent = false;
    });
  }
  session.clearRemovals(path);
}

/** What the chain rules need to know of a persistent bitmap (qemu's BlockDirtyInfo, or qemu-img info's flags). */
export interface ChainBitmap {
  recording: boolean;
  inconsistent?: boolean;
}

/**
 * Rules 1 and 3 above: the index of the newest lost checkpoint in `checkpoints` (oldest first),
 * -1 when none is lost. `loaded` holds the persistent bitmaps by name, `strays` those the
 * checkpoints do not name. Every checkpoint after the returned index can be trusted once the
 * strays (if any) are merged into the newest one.
 */
export function newestLost(checkpoints: CheckpointRecord[], loaded: ReadonlyMap<string, ChainBitmap>, strays: ChainBitmap[]): number {
  let lost = -1;
  checkpoints.forEach((c, i) => {
    const b = loaded.get(c.id);
    if (!c.consistent || !b || b.inconsistent) lost = i;
  });
  const newest = lost + 1 < checkpoints.length ? loaded.get(checkpoints.at(-1)!.id)! : undefined;
  if (newest) {
    const strayRecords = strays.some((b) => b.recording && !b.inconsistent);
    if (strays.some((b) => b.inconsistent) || (!newest.recording && !strayRecords)) lost = checkpoints.length - 1;
  }
  return lost;
}

/**
 * The checkpoints of a snapshot copy, judged by the bitmaps `qemu-img convert --bitmaps` put in it
 * (by name; inconsistent ones were skipped): the volume's image is copied closed, so nothing
 * reconciled its bitmaps with the sidecar (a crash may have left a stray, or the newest one
 * disabled). The same rules as reconcileCheckpoints, except that strays cannot be merged into a
 * copy's newest checkpoint: any stray makes every checkpoint lost, and so does `resized` (the
 * copy's size is not the volume sidecar's: rule 0). A checkpoint the copy cannot
 * answer for comes back `consistent: false` (its queries are NOT_FOUND: the caller reads
 * everything), so a copy never under-reports.
 */
export function copiedCheckpoints(checkpoints: CheckpointRecord[], bitmaps: ReadonlyMap<string, ChainBitmap>, resized: boolean): CheckpointRecord[] {
  const known = new Set(checkpoints.map((c) => c.id));
  const strays = [...bitmaps].filter(([name]) => !known.has(name)).map(([, b]) => b);
  const lost = strays.length > 0 || resized ? checkpoints.length - 1 : newestLost(checkpoints, bitmaps, strays);
  return checkpoints.map((c, i) => ({ ...c, consistent: c.consistent && i > lost }));
}

/** Reconciles the node when it is unsettled (see DaemonSession.isUnsettled), then marks it settled. */
export async function settleCheckpoints(session: DaemonSession, node: string, store: RecordStore, volumeId: string): Promise<void> {
  if (!session.isUnsettled(node)) return;
  // The reply to this reconcile's first query comes after qemu ran every command sent before it,
  // including the one whose reply was lost: from here on the node's state is known.
  await reconcileCheckpoints(session, node, store, volumeId);
  session.markSettled(node);
}

async function removeBitmap(session: DaemonSession, node: string, b: BlockDirtyInfo): Promise<void> {
  await session.qmp.execute('block-dirty-bitmap-remove', { node, name: b.name! }).catch((err: CairnError) => {
    if (err.code !== 'NOT_FOUND') throw err;
  });
}
