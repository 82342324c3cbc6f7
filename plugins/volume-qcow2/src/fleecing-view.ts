import { rm } from 'node:fs/promises';
import { newId, nowIso, type CairnError, type Snapshot } from '@cairn/core';
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
 * Prepares a view: names its nodes, job and frozen bitmaps (one per consistent checkpoint whose
 * newer ones are all consistent) and creates its overlay file. Nothing runs in qemu yet, so the
 * caller holds a view it can pass to destroyView whatever startView does.
 */
export async function prepareView(input: CreateViewInput): Promise<FleecingView> {
  const { session } = input;
  const id = newId();
  const overlayPath = input.overlayPath(id);
  try {
    await input.qemuImg.create(overlayPath, input.size);
  } catch (err) {
    await rm(overlayPath, { force: true }).catch(() => {}); // a create that failed or timed out may leave part of it
    throw err;
  }
  const frozen = new Map<string, string>();
  const cps = input.checkpoints;
  cps.forEach((c, i) => {
    if (cps.slice(i).every((x) => x.consistent)) frozen.set(c.id, session.nextName('cairn-v'));
  });
  const info: Snapshot = { id, volumeId: input.volumeId, name: input.name, size: input.size, createdAt: nowIso() };
  return { info, session, node: input.node, overlay: session.nextName('ov'), overlayPath, filter: session.nextName('cbw'), job: session.nextName('fleece'), frozen };
}

/**
 * Starts a prepared view: `blockdev-add` of the overlay with the volume's node as backing, then
 * ONE transaction that (a) freezes, for every checkpoint in `view.frozen`, a disabled copy of the
 * union of its bitmap and all newer ones (`checkpoints`: the volume's, oldest first), and (b)
 * starts `blockdev-backup sync=none` from the node to the overlay, which inserts a
 * copy-before-write filter right above the node (below any older view's filter): from that
 * instant every guest write first copies the old data into the overlay, so the overlay reads the
 * volume as it was. On failure the caller tears the view down with destroyView: after a timeout
 * qemu may still run the transaction, so what exists is known only from a later answer.
 */
export async function startView(view: FleecingView, checkpoints: CheckpointRecord[]): Promise<void> {
  const { session, node } = view;
  await session.qmp.execute('blockdev-add', {
    driver: 'qcow2',
    'node-name': view.overlay,
    file: { driver: 'file', filename: view.overlayPath },
    backing: node,
  });
  const steps: TransactionAction[] = [];
  const ids = checkpoints.map((c) => c.id);
  for (const [checkpoint, name] of view.frozen) {
    steps.push(actions.bitmapAdd({ node, name, disabled: true, granularity: CLUSTER }));
    steps.push(actions.bitmapMerge({ node, target: name, bitmaps: ids.slice(ids.indexOf(checkpoint)) }));
  }
  steps.push(actions.blockdevBackup({ 'job-id': view.job, device: node, target: view.overlay, sync: 'none', 'filter-node-name': view.filter }));
  await session.qmp.transaction(steps);
}

/**
 * Tears a view down, whatever part of it exists: cancels its backup job if qemu lists it (qemu
 * removes the filter; waits for BLOCK_JOB_CANCELLED, at most the command timeout from the
 * cancel's reply), deletes the overlay node and the frozen
 * bitmaps where present, and removes the overlay file. What qemu reports gone (NOT_FOUND) counts
 * as done, also a job that ended between the query and the cancel (qemu's DeviceNotActive); any
 * other error is thrown, the view then partly there. The job query comes first: its reply proves
 * qemu has run every command sent before, including a startView whose reply never came.
 * Idempotent, so it can run again after any failure. Exports of the view must be gone first.
 * Safe after the daemon died (only the file is removed).
 */
export async function destroyView(view: FleecingView): Promise<void> {
  const { session } = view;
  if (session.alive) {
    const jobs = await session.qmp.execute('query-block-jobs');
    if (jobs.some((j) => j.device === view.job)) {
      const cancelling = session.qmp.execute('block-job-cancel', { device: view.job });
      // Registered in the same tick as the sending (no event missed); bounded from the cancel's reply, not its queueing.
      const cancelled = session.qmp.waitForEvent('BLOCK_JOB_CANCELLED', (e) => e.data.device === view.job, { timeoutMs: session.timeoutMs, after: cancelling });
      if (await isPresent(cancelling)) await cancelled;
    }
    await ignoreNotFound(session.qmp.execute('blockdev-del', { 'node-name': view.overlay }));
    for (const name of view.frozen.values()) await ignoreNotFound(session.qmp.execute('block-dirty-bitmap-remove', { node: view.node, name }));
  }
  await rm(view.overlayPath, { force: true });
}

/** Whether the command found what it works on: NOT_FOUND (already gone) gives false, any other error is thrown. */
async function isPresent(work: Promise<unknown>): Promise<boolean> {
  try {
    await work;
    return true;
  } catch (err) {
    if ((err as CairnError).code !== 'NOT_FOUND') throw err;
    return false;
  }
}

async function ignoreNotFound(work: Promise<unknown>): Promise<void> {
  await isPresent(work);
}
