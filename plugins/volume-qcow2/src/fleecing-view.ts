import { rm } from 'node:fs/promises';
import { newId, nowIso, type Snapshot } from '@cairn/core';
import { actions, type TransactionAction } from '@cairn/qmp';
import type { DaemonSession } from './daemon-session.js';
import { CLUSTER, type QemuImg } from './qemu-img.js';
import type { CheckpointRecord } from './records.js';

/**
 * A point-in-time view of a volume in use (qemu "image fleecing"). It lives in one daemon
 * session: until deleteSnapshot, the driver's close, or the daemon's death.
 */
export interface FleecingView {
  info: Snapshot;
  session: DaemonSession;
  /** The volume's node (holds the frozen bitmaps). */
  node: string;
  /** The overlay node: what attach exports. */
  overlay: string;
  overlayPath: string;
  /** The copy-before-write filter qemu put above the source. */
  filter: string;
  job: string;
  /** Checkpoint id → a disabled bitmap on `node` holding the changes since it, frozen at the view's instant. */
  frozen: Map<string, string>;
}

export interface CreateViewInput {
  session: DaemonSession;
  qemuImg: QemuImg;
  volumeId: string;
  name: string;
  size: number;
  /** The volume's node: the backup job's source and the overlay's backing. */
  node: string;
  checkpoints: CheckpointRecord[];
  overlayPath: (viewId: string) => string;
}

/**
 * Creates a view: a temporary qcow2 overlay whose backing is the volume's node, then ONE
 * transaction that (a) freezes, for every consistent checkpoint, a disabled copy of the union
 * of its bitmap and all newer ones, and (b) starts `blockdev-backup sync=none` from the node to
 * the overlay, which inserts a copy-before-write filter right above the node (below any older view's
 * filter): from that instant every guest write
 * first copies the old data into the overlay, so the overlay reads the volume as it was. Not
 * idempotent; on failure nothing is left behind.
 */
export async function createView(input: CreateViewInput): Promise<FleecingView> {
  const { session } = input;
  const id = newId();
  const overlayPath = input.overlayPath(id);
  await input.qemuImg.create(overlayPath, input.size);
  const overlay = session.nextName('ov');
  const filter = session.nextName('cbw');
  const job = session.nextName('fleece');
  const frozen = new Map<string, string>();
  try {
    await session.qmp.execute('blockdev-add', {
      driver: 'qcow2',
      'node-name': overlay,
      file: { driver: 'file', filename: overlayPath },
      backing: input.node,
    });
    const steps: TransactionAction[] = [];
    const cps = input.checkpoints;
    cps.forEach((c, i) => {
      if (!cps.slice(i).every((x) => x.consistent)) return;
      const name = session.nextName('cairn-v');
      frozen.set(c.id, name);
      steps.push(actions.bitmapAdd({ node: input.node, name, disabled: true, granularity: CLUSTER }));
      steps.push(actions.bitmapMerge({ node: input.node, target: name, bitmaps: cps.slice(i).map((x) => x.id) }));
    });
    steps.push(actions.blockdevBackup({ 'job-id': job, device: input.node, target: overlay, sync: 'none', 'filter-node-name': filter }));
    try {
      await session.qmp.transaction(steps);
    } catch (err) {
      await session.qmp.execute('blockdev-del', { 'node-name': overlay }).catch(() => {});
      throw err;
    }
  } catch (err) {
    await rm(overlayPath, { force: true });
    throw err;
  }
  const info: Snapshot = { id, volumeId: input.volumeId, name: input.name, size: input.size, createdAt: nowIso() };
  return { info, session, node: input.node, overlay, overlayPath, filter, job, frozen };
}

/**
 * Tears a view down: cancels the backup job (qemu removes the filter; waits for
 * BLOCK_JOB_CANCELLED), deletes the overlay node and its file, and removes the frozen bitmaps.
 * Exports of the view must be gone first. Safe after the daemon died (only the file is removed).
 */
export async function destroyView(view: FleecingView): Promise<void> {
  const { session } = view;
  if (session.alive) {
    const cancelled = session.qmp.waitForEvent('BLOCK_JOB_CANCELLED', (e) => e.data.device === view.job);
    await session.qmp.execute('block-job-cancel', { device: view.job });
    await cancelled;
    await session.qmp.execute('blockdev-del', { 'node-name': view.overlay });
    for (const name of view.frozen.values()) {
      await session.qmp.execute('block-dirty-bitmap-remove', { node: view.node, name }).catch(() => {});
    }
  }
  await rm(view.overlayPath, { force: true });
}
