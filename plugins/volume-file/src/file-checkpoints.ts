import type { ChangedBlockTracking, Checkpoint, Extent } from '@cairn/core';
import { newId, nowIso, toCairnError } from '@cairn/core';
import { removeBitmap } from './change-tracker.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import type { DriverContext } from './driver-context.js';
import { GRANULARITY } from './file-block-device.js';
import { isUuid, type RecordKind } from './layout.js';
import type { CheckpointRecord } from './records.js';

/**
 * Changed-block tracking with one dirty bitmap per checkpoint (64 KiB granules), kept in memory
 * while the volume is attached read-write here and saved on flush and detach. Only writes made
 * through this driver are tracked.
 */
export class FileCheckpoints implements ChangedBlockTracking {
  constructor(private readonly ctx: DriverContext) {}

  /**
   * Starts tracking from now. `NOT_FOUND` for an unknown volume; `INVALID_INPUT` for a volume
   * larger than a bitmap tracks (about 1 PiB); `BUSY` while another process (or
   * driver instance) has it attached read-write — its writes could not be tracked here. Not idempotent.
   * A call that fails leaves no bitmap behind: the live tracker gets the new bitmap only once the
   * sidecar naming it is written, and a failed sidecar write removes the bitmap file (and the
   * checkpoint, should the sidecar have landed although its write failed).
   */
  async createCheckpoint(volumeId: string): Promise<Checkpoint> {
    const { ctx } = this;
    return this.guard('createCheckpoint', () =>
      ctx.targets.run(`volume:${volumeId}`, async () => {
        await ctx.store.volume(volumeId);
        const cp: CheckpointRecord = { id: newId(), createdAt: nowIso(), consistent: true };
        const tracker = ctx.trackers.get(volumeId);
        const add = async () => {
          // Without a local writer, tracking starts from the image as it is now: its stamp is
          // settled before the metadata lock is taken (settling may wait one tick of a coarse
          // clock), which is safe as the image's shared lock keeps every writer of ours off it
          // until the sidecar is written; an outside write meanwhile gets a later ctime, so the
          // stamp no longer matches and the checkpoint is made inconsistent at the next check.
          const now = tracker ? undefined : await ctx.imageStamp(volumeId);
          const bitmap = await ctx.store
            .updateVolume(volumeId, async (r) => {
              await ctx.recover(r, now);
              if (now) r.imageStamp = now;
              if (r.size > DirtyBitmap.maxSize(GRANULARITY)) throw ctx.err('INVALID_INPUT', `volume ${volumeId} is larger than a dirty bitmap tracks (${DirtyBitmap.maxSize(GRANULARITY)} bytes)`);
              const empty = DirtyBitmap.empty(r.size, GRANULARITY);
              await ctx.saveBitmap('volume', volumeId, cp.id, empty);
              r.checkpoints.push(cp);
              return empty;
            })
            .catch(async (err: unknown) => {
              await this.undoCreate(volumeId, cp.id);
              throw err;
            });
          // Writes are held back (gate) or cannot happen here (lock): tracking starts at the sidecar write.
          tracker?.add(cp.id, bitmap);
        };
        // With a local writer, no write may fall between "now" and the new bitmap.
        if (tracker) await tracker.gate.exclusive(add);
        else await ctx.locks.during(ctx.store.layout.image('volume', volumeId), 'shared', add);
        return { id: cp.id, volumeId, createdAt: cp.createdAt };
      }),
    );
  }

  /**
   * Best-effort undo of a createCheckpoint whose sidecar write failed: drops the checkpoint from
   * the sidecar if the write landed all the same (a rename done, its directory fsync failed), then
   * its bitmap file. What cannot be undone stays safe: a listed checkpoint without its bitmap is
   * inconsistent (`NOT_FOUND`), and a bitmap file no sidecar names is never read.
   */
  private async undoCreate(volumeId: string, checkpointId: string): Promise<void> {
    const { ctx } = this;
    try {
      if ((await ctx.store.volume(volumeId)).checkpoints.some((c) => c.id === checkpointId)) {
        await ctx.store.updateVolume(volumeId, (r) => {
          r.checkpoints = r.checkpoints.filter((c) => c.id !== checkpointId);
        });
      }
    } catch {
      // the error of the failed write is the one the caller gets
    }
    await removeBitmap(ctx.store.layout.bitmap('volume', volumeId, checkpointId)).catch(() => {});
  }

  /** Checkpoints oldest first, consistent or not. `NOT_FOUND` for an unknown volume. */
  async listCheckpoints(volumeId: string): Promise<Checkpoint[]> {
    return this.guard('listCheckpoints', async () => {
      const r = await this.ctx.store.volume(volumeId);
      return r.checkpoints.map((c) => ({ id: c.id, volumeId, createdAt: c.createdAt }));
    });
  }

  /**
   * Stops tracking. `NOT_FOUND` for an unknown volume; an unknown checkpoint is not an error.
   * Idempotent. The sidecar drops the checkpoint first: a live tracker stops marking its bitmap
   * only once it is gone from there, so a failed delete leaves a checkpoint that still tracks
   * every write (its saved bitmap would otherwise miss the writes made after the attempt). A
   * writer in another driver instance or process stops tracking it at its next save, which writes
   * only the bitmaps the sidecar names (ChangeTracker.save): the removed bitmap file never comes back.
   */
  async deleteCheckpoint(volumeId: string, checkpointId: string): Promise<void> {
    const { ctx } = this;
    await this.guard('deleteCheckpoint', async () => {
      await ctx.store.volume(volumeId);
      if (!isUuid(checkpointId)) return;
      await ctx.store.updateVolume(volumeId, (r) => {
        r.checkpoints = r.checkpoints.filter((c) => c.id !== checkpointId);
      });
      ctx.trackers.get(volumeId)?.remove(checkpointId);
      await removeBitmap(ctx.store.layout.bitmap('volume', volumeId, checkpointId));
    });
  }

  /**
   * Extents changed since `checkpointId` on the volume or snapshot `id`, from the live tracker
   * when the volume is attached read-write here, else from the saved bitmap. `NOT_FOUND` when the
   * checkpoint is unknown, inconsistent, or its bitmap is missing or damaged, and for a volume
   * whose image no longer matches its stamp (written outside the driver, core's drivers/image-stamp.ts).
   */
  async changedSince(kind: RecordKind, id: string, checkpointId: string): Promise<Extent[]> {
    const { ctx } = this;
    const notFound = () => ctx.err('NOT_FOUND', `checkpoint ${String(checkpointId)} of ${kind} ${id} is unknown or inconsistent`);
    const tracker = kind === 'volume' ? ctx.trackers.get(id) : undefined;
    if (tracker) {
      const live = tracker.changedSince(checkpointId);
      if (!live) throw notFound();
      return live;
    }
    const r = kind === 'volume' ? await ctx.store.volume(id) : await ctx.store.snapshot(id);
    const c = r.checkpoints.find((x) => x.id === checkpointId);
    if (!c?.consistent || ('writer' in r && r.writer)) throw notFound();
    if ('writer' in r && !(await ctx.imageUnchanged(r))) throw notFound(); // written behind the driver's back
    const bitmap = await ctx.loadBitmap(kind, id, checkpointId, r.size);
    if (!bitmap) throw notFound();
    return bitmap.extents();
  }

  /** Every error a CairnError tagged with the driver (file system errors mapped: ENOSPC → UNAVAILABLE, …). */
  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toCairnError(err, this.ctx.name, what);
    }
  }
}
