import { CairnError } from '@cairn/core';
import type { DaemonSession } from './daemon-session.js';
import type { RecordStore } from './record-store.js';
import type { VolumeRecord } from './records.js';

/**
 * Grows the volume's image to `size` bytes through `node`, the image opened in `session`'s daemon
 * for this call (Runtime.openVolume). While the daemon has it open no other daemon and no
 * `qemu-img` without `-U` can open the image (qemu's lock), so the size checked here is the size
 * resized from, and no other Cairn process can resize it, attach it or read it until the node
 * closes: the check, the resize and the sidecar write are one step for them.
 *
 * The current size is the larger of the sidecar's and the image's (an extend that died between
 * `block_resize` and its sidecar write left the image larger): `INVALID_INPUT` below it, since
 * qemu's `block_resize` would shrink the image without asking. The same size in both changes
 * nothing. Otherwise, in this order, so that a failure at any step never leaves a checkpoint that
 * claims more than it has: every checkpoint is marked not consistent in the sidecar (qemu cannot
 * mark the new tail dirty: the next backup is full), the image's persistent bitmaps are removed,
 * `block_resize` grows the image (the tail reads as zeros), and the sidecar gets the new size.
 *
 * Returns the sidecar as written. Errors: those of the sidecar store and of qemu (`UNAVAILABLE`
 * when the daemon does not answer in time: the resize may still happen, and the next extend sees
 * it). Callers hold the volume's lock and made sure the node was not open before (no attachment,
 * view or other user in this daemon).
 */
export async function growImage(session: DaemonSession, node: string, store: RecordStore, volumeId: string, size: number, driver: string): Promise<VolumeRecord> {
  const record = await store.volume(volumeId);
  const image = await imageSize(session, node, driver);
  const current = Math.max(record.size, image);
  if (size < current) {
    throw new CairnError('INVALID_INPUT', `cannot shrink volume ${volumeId} from ${current} to ${size}`, { driver });
  }
  if (size === record.size && size === image) return record;
  if (record.checkpoints.some((c) => c.consistent)) {
    await store.updateVolume(volumeId, (r) => r.checkpoints.forEach((c) => (c.consistent = false)));
  }
  for (const b of await session.bitmaps(node)) {
    if (!b.name || !b.persistent) continue;
    await session.qmp.execute('block-dirty-bitmap-remove', { node, name: b.name }).catch((err: CairnError) => {
      if (err.code !== 'NOT_FOUND') throw err;
    });
  }
  if (size !== image) await session.qmp.execute('block_resize', { 'node-name': node, size });
  return store.updateVolume(volumeId, (r) => {
    r.size = size;
    return r;
  });
}

/**
 * The virtual size of the node's image, as qemu has it open: the size its exports (attach) serve,
 * larger than the sidecar's after an extend that died between `block_resize` and its sidecar write.
 */
export async function imageSize(session: DaemonSession, node: string, driver: string): Promise<number> {
  const nodes = await session.qmp.execute('query-named-block-nodes', { flat: true });
  const size = nodes.find((n) => n['node-name'] === node)?.image?.['virtual-size'];
  if (typeof size !== 'number') throw new CairnError('INTERNAL', `qemu reports no size for node ${node}`, { driver });
  return size;
}
