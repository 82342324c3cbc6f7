import { newId, nowIso } from '@cairn/core';
import { actions, type TransactionAction } from '@cairn/qmp';
import { chainTransaction } from './chain-transaction.js';
import type { DaemonSession } from './daemon-session.js';
import { CLUSTER } from './qemu-img.js';
import type { RecordStore } from './record-store.js';
import type { CheckpointRecord } from './records.js';
import { imageSize } from './volume-extend.js';

/*
 * The checkpoint chain of a volume, kept in its sidecar (oldest first) and as persistent dirty
 * bitmaps in its image, one per checkpoint, named by the checkpoint id. Invariant: only the
 * newest consistent checkpoint's bitmap records writes; each older one holds exactly the writes
 * between its checkpoint and the next. "Changed since C" is therefore the union of C's bitmap and
 * every newer one. All functions run with the volume's node open and settled (Runtime.openVolume)
 * and the volume's lock held. No failure may drop a write from the union: when qemu's state is
 * unknown the node is marked unsettled (chain-transaction.ts) and reconciled before it is trusted.
 */

/**
 * Starts a checkpoint: ONE transaction disables the recording bitmap and adds the new persistent
 * one, so no write falls between them; then the sidecar gets the new entry, and the image's size
 * (which differs from the sidecar's only after a resize outside the driver or an extend that died
 * after `block_resize`). When the sidecar write (or the size query before it) fails, ONE
 * transaction merges the new bitmap into the previous one (the writes it recorded meanwhile
 * belong to the previous checkpoint), re-enables that one and removes the new one; if even that
 * fails the node is left unsettled. That error is rethrown. Not idempotent.
 */
export async function addCheckpoint(session: DaemonSession, node: string, store: RecordStore, volumeId: string): Promise<CheckpointRecord> {
  const record = await store.volume(volumeId);
  const last = record.checkpoints.at(-1);
  const checkpoint: CheckpointRecord = { id: newId(), createdAt: nowIso(), consistent: true };
  const steps: TransactionAction[] = [];
  if (last?.consistent) steps.push(actions.bitmapDisable({ node, name: last.id }));
  steps.push(actions.bitmapAdd({ node, name: checkpoint.id, persistent: true, granularity: CLUSTER }));
  await chainTransaction(session, node, steps);
  try {
    // The new bitmap covers the image at its size now: the sidecar gets that size with it, so the
    // next reconcile keeps the checkpoint (rule 0 of checkpoint-reconcile.ts). Older checkpoints
    // were made lost by the reconcile of this open when the sizes differed.
    const size = await imageSize(session, node, store.driverName);
    await store.updateVolume(volumeId, (r) => {
      r.checkpoints.push(checkpoint);
      r.size = size;
    });
  } catch (err) {
    const undo: TransactionAction[] = [];
    if (last?.consistent) {
      undo.push(actions.bitmapMerge({ node, target: last.id, bitmaps: [checkpoint.id] }));
      undo.push(actions.bitmapEnable({ node, name: last.id }));
    }
    undo.push(actions.bitmapRemove({ node, name: checkpoint.id }));
    // Any failure here leaves a bitmap the sidecar does not know: reconcile it before trusting the chain.
    await chainTransaction(session, node, undo).catch(() => session.markUnsettled(node));
    throw err;
  }
  return checkpoint;
}

/**
 * Deletes a checkpoint without losing what older ones need: in ONE transaction its bitmap is
 * merged into the previous checkpoint's (which records again when the deleted one was the
 * newest) and removed; then the sidecar drops it. When the transaction's outcome is unknown or
 * the sidecar write fails, the removal is noted (DaemonSession.noteRemoval) and the node left
 * unsettled: its reconcile then drops the checkpoint if its bitmap is gone (the transaction ran,
 * merge included) instead of losing the older checkpoints. Idempotent: an unknown checkpoint is
 * not an error.
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
    try {
      await chainTransaction(session, node, steps);
    } catch (err) {
      if (session.isUnsettled(node)) session.noteRemoval(store.layout.image('volume', volumeId), checkpointId);
      throw err;
    }
  }
  try {
    await store.updateVolume(volumeId, (r) => {
      r.checkpoints = r.checkpoints.filter((c) => c.id !== checkpointId);
    });
  } catch (err) {
    if (present.has(target.id)) {
      session.noteRemoval(store.layout.image('volume', volumeId), checkpointId);
      session.markUnsettled(node);
    }
    throw err;
  }
}
