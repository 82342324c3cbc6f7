import { constants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { nowIso } from '@cairn/core';
import { adoptCreatedFile } from './dir-owner.js';
import type { DirtyBitmap } from './dirty-bitmap.js';
import type { DriverContext } from './driver-context.js';
import { copyImage } from './image-copy.js';
import { resizeImage } from './image-size.js';
import { namingFullDisk } from './no-space.js';
import type { CheckpointRecord, SnapshotRecord, VolumeRecord } from './records.js';

/**
 * Writes a snapshot of `volume`: the image copy (reflink or sparse copy), each consistent
 * checkpoint's bitmap as of now (`live` bitmaps of a local writer, else the saved ones), then the
 * sidecar, whose appearance makes the snapshot exist. The caller keeps the image from changing.
 * An image shorter than the sidecar says (an extend interrupted by a crash) is copied grown to
 * the sidecar's size: the missing tail reads as zeros, as it will on the volume once attached.
 * Without `live` (no local writer), `volume` is a record whose image stamp the caller has just
 * checked (DriverContext.recovered): once copied, the image is compared again with the sidecar's
 * stamp as it is then (another process's heal of the image updates it, a write from outside does
 * not), and a write from outside the driver meanwhile makes every checkpoint of the snapshot and
 * of the volume inconsistent.
 * Its files get the owner of their directory when root makes them in another user's (dir-owner.ts).
 * On failure nothing of the snapshot is left (no sidecar, image or bitmaps; or, when its sidecar
 * landed and cannot be removed, the whole snapshot) and the error is thrown.
 */
export async function createSnapshotFiles(
  ctx: DriverContext,
  volume: VolumeRecord,
  id: string,
  name: string,
  live: Map<string, DirtyBitmap> | undefined,
): Promise<SnapshotRecord> {
  try {
    return await writeSnapshotFiles(ctx, volume, id, name, live);
  } catch (err) {
    // All or nothing: a failed snapshot (no space for the copy, its bitmaps or its sidecar) leaves
    // no copy behind to keep the space taken, and never a listed snapshot without its image.
    const { layout } = ctx.store;
    await ctx.store.discardCreated('snapshot', id, [layout.image('snapshot', id), layout.cbtDir('snapshot', id)]);
    throw err;
  }
}

async function writeSnapshotFiles(
  ctx: DriverContext,
  volume: VolumeRecord,
  id: string,
  name: string,
  live: Map<string, DirtyBitmap> | undefined,
): Promise<SnapshotRecord> {
  const { layout } = ctx.store;
  const image = layout.image('snapshot', id);
  await namingFullDisk(image, 'copying the volume\'s image to', ctx.name, async () => {
    await copyImage(layout.image('volume', volume.id), image, ctx.name);
    await adoptCreatedFile(image); // the copy is root's: it gets the directory's owner, as the sidecar will
    if ((await stat(image)).size < volume.size) {
      const fh = await open(image, constants.O_RDWR | constants.O_NOFOLLOW); // the copy just made: never another file through a symlink
      try {
        await resizeImage(fh, volume.size, ctx.name);
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  });
  await ctx.makeCbtDir('snapshot', id);
  const checkpoints: CheckpointRecord[] = [];
  for (const c of volume.checkpoints) {
    const bitmap = !c.consistent ? undefined : live ? live.get(c.id) : await ctx.loadBitmap('volume', volume.id, c.id, volume.size);
    if (bitmap) await ctx.saveBitmap('snapshot', id, c.id, bitmap);
    checkpoints.push({ id: c.id, createdAt: c.createdAt, consistent: !!bitmap });
  }
  if (!live) {
    // Compared with the sidecar as it is now, not `volume`: another process's heal of an
    // interrupted extend during the copy (under a shared image lock too) updated its stamp, while a
    // write from outside does not. Read under the metadata lock, which such a heal holds from its
    // resize to its sidecar's new stamp, so sidecar and image are seen both before it or both after.
    const { unchanged, now } = await ctx.store.exclusively(async () => {
      const now = await ctx.store.volume(volume.id);
      return { now, unchanged: await ctx.imageUnchanged(now) };
    });
    for (const c of checkpoints) {
      // Made inconsistent meanwhile (another process saw a write from outside and recovered the
      // volume, its new stamp absorbing the write): the copy may hold that write too.
      if (!unchanged || now.checkpoints.find((x) => x.id === c.id)?.consistent !== true) c.consistent = false;
    }
    // Written from outside the driver since the sidecar's stamp was taken: perhaps during the copy,
    // which then holds a write its checkpoints' bitmaps do not. Neither the snapshot's checkpoints
    // nor the volume's are consistent then (the volume's recovered as recover does).
    if (!unchanged) await ctx.recovered(volume.id);
  }
  const record: SnapshotRecord = {
    format: 1,
    kind: 'snapshot',
    id,
    volumeId: volume.id,
    name,
    size: volume.size,
    createdAt: nowIso(),
    checkpoints,
  };
  await ctx.store.put(record);
  return record;
}
