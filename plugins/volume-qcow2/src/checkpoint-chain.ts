import { newId, nowIso, type CairnError } from '@cairn/core';
import { actions, type TransactionAction } from '@cairn/qmp';
import type { DaemonSession } from './daemon-session.js';
import { CLUSTER } from './qemu-img.js';
import type { RecordStore } from './record-store.js';
import type { CheckpointRecord } from './records.js';

/*
 * The checkpoint chain of a volume, kept in its sidecar (oldest first) and as persistent dirty
 * bitmaps in its image, one per checkpoint, named by the checkpoint id. Invariant: only the
 * newest consistent checkpoint's bitmap records writes; each older one holds exactly the writes
 * between its checkpoint and the next. "Changed since C" is therefore the union of C's bitmap and
 * every newer one. All functions run with the volume's node open and the volume's lock held.
 */

/**
 * Starts a checkpoint: ONE transaction disables the recording bitmap and adds the new persistent
 * one, so no write falls between them; then the sidecar gets the new entry. Not idempotent.
 */
export async function addCheckpoint(session: DaemonSession, node: string, store: RecordStore, volumeId: string): Promise<CheckpointRecord> {
  const record = await store.volume(volumeId);
  const last = record.checkpoints.at(-1);
  const checkpoint: CheckpointRecord = { id: newId(), createdAt: nowIso(), consistent: true };
  const steps: TransactionAction[] = [];
  if (last?.consistent) steps.push(actions.bitmapDisable({ node, name: last.id }));
  steps.push(actions.bitmapAdd({ node, name: checkpoint.id, persistent: true, granularity: CLUSTER }));
  await session.qmp.transaction(steps);
  try {
    await store.updateVolume(volumeId, (r) => {
      r.checkpoints.push(checkpoint);
    });
  } catch (err) {
    // Undo, so the chain and the sidecar keep agreeing.
    const undo: TransactionAction[] = [actions.bitmapRemove({ node, name: checkpoint.id })];
    if (last?.consistent) undo.push(actions.bitmapEnable({ node, name: last.id }));
    await session.qmp.transaction(undo).catch(() => {});
    throw err;
  }
  return checkpoint;
}

/**
 * Deletes a checkpoint without losing what older ones need: in ONE transaction its bitmap is
 * merged into the previous checkpoint's (which records again when the deleted one was the
 * newest) and removed. Idempotent: an unknown checkpoint is not an error.
 */
export async function removeCheckpoint(session: DaemonSession, node: string, store: RecordStore, volumeId: string, checkpointId: string): Promise<void> {
  const record = await store.volume(volumeId);
  const i = record.checkpoints.findIndex((c) => c.id === checkpointId);
  if (i < 0) return;
  const target = record.checkpoints[i]!;
  const prev = record.checkpoints[i - 1];
  const present = new Set((await session.bitmaps(node)).map((b) => b.name));
  if (present.has(target.id)) {
    const steps: TransactionAction[] = [];
    if (target.consistent && prev?.consistent) {
      steps.push(actions.bitmapMerge({ node, target: prev.id, bitmaps: [target.id] }));
      if (i === record.checkpoints.length - 1) steps.push(actions.bitmapEnable({ node, name: prev.id }));
    }
    steps.push(actions.bitmapRemove({ node, name: target.id }));
    await session.qmp.transaction(steps);
  }
  await store.updateVolume(volumeId, (r) => {
    r.checkpoints = r.checkpoints.filter((c) => c.id !== checkpointId);
  });
}

/**
 * Makes the sidecar agree with the bitmaps qemu loaded when the node was opened. A checkpoint
 * whose bitmap is missing (created in a daemon that was killed) or `inconsistent` (the daemon
 * died while the image was open) is marked not consistent, and so is every older one (their
 * unions would miss its writes): `extents(changed)` since them fails with NOT_FOUND. Broken and
 * unknown persistent bitmaps are removed; the newest consistent bitmap is made the only one
 * recording. Idempotent.
 */
export async function reconcileCheckpoints(session: DaemonSession, node: string, store: RecordStore, volumeId: string): Promise<void> {
  const loaded = new Map((await session.bitmaps(node)).filter((b) => b.name).map((b) => [b.name!, b]));
  const record = await store.volume(volumeId);
  let lost = -1;
  record.checkpoints.forEach((c, i) => {
    const b = loaded.get(c.id);
    if (!c.consistent || !b || b.inconsistent) lost = i;
  });
  const keep = new Set(record.checkpoints.slice(lost + 1).map((c) => c.id));
  const steps: TransactionAction[] = [];
  for (const name of loaded.keys()) if (!keep.has(name)) steps.push(actions.bitmapRemove({ node, name }));
  const kept = record.checkpoints.slice(lost + 1);
  kept.forEach((c, i) => {
    const recording = loaded.get(c.id)!.recording;
    const newest = i === kept.length - 1;
    if (newest && !recording) steps.push(actions.bitmapEnable({ node, name: c.id }));
    if (!newest && recording) steps.push(actions.bitmapDisable({ node, name: c.id }));
  });
  // Inconsistent bitmaps refuse every use but removal, so remove them one by one.
  for (const s of steps.filter((s) => s.type === 'block-dirty-bitmap-remove')) {
    await session.qmp.execute('block-dirty-bitmap-remove', s.data as { node: string; name: string }).catch((err: CairnError) => {
      if (err.code !== 'NOT_FOUND') throw err;
    });
  }
  const toggles = steps.filter((s) => s.type !== 'block-dirty-bitmap-remove');
  if (toggles.length) await session.qmp.transaction(toggles);
  if (lost >= 0 && record.checkpoints.slice(0, lost + 1).some((c) => c.consistent)) {
    await store.updateVolume(volumeId, (r) => {
      for (const c of r.checkpoints) if (!keep.has(c.id)) c.consistent = false;
    });
  }
}
