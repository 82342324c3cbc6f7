import { sameStamp, type ImageStamp } from '@cairn/core';
import type { DriverContext } from './driver-context.js';
import type { VolumeRecord } from './records.js';

/**
 * A change of the driver's own to a volume's image (growing it: an extend, or an attach healing an
 * interrupted one), which must not count as a write from outside the driver, while a write from
 * outside made around it must still be seen. Use, holding a lock that keeps every writer of ours off
 * the image:
 *
 *   const own = await OwnImageChange.begin(ctx, volumeId, reference);
 *   await change();          // e.g. resizeImage
 *   await own.record();
 *
 * `begin` compares the image with `reference`, the stamp the sidecar holds when the caller last
 * checked the image (recover): a write from outside made since that check (while the caller saved
 * bitmaps, say) would otherwise be absorbed by the new stamp. `record` stats the image at once
 * (`after`; or `changed` took it earlier), then takes the settled stamp (core's settledStampOf,
 * which may wait one tick of a coarse clock) and compares the two: a write from outside made while
 * settling would otherwise be absorbed as well. On either mismatch every checkpoint of the volume
 * is made inconsistent (as recover does); the settled stamp is saved either way.
 *
 * A heal runs under a shared image lock, so other processes (their attaches, snapshots, heals) may
 * look at the image meanwhile. It makes the change holding the metadata lock, reading there the
 * sidecar's current stamp as `reference` (another process's heal since the caller's check updated
 * it), and saves `changed`'s unsettled stamp (`edit`) in the same hold: the sidecar and the image
 * are then seen both before the change or both after it, by anyone reading them under that lock,
 * and another process's check of the grown image matches. `record` then settles outside the
 * metadata lock (settling may wait one tick of a coarse clock, which would hold up every metadata
 * change of the directory).
 *
 * Not caught: a write landing between `begin`'s stat and `after` (the change's few system calls),
 * at any timestamp granularity: it is absorbed with the change. After a heal, should the process
 * die before `record`, also a write in the same tick of a coarse clock as `after` (the unsettled
 * stamp stays in the sidecar). A clock set back does not make settling touch a
 * grown image (settledStampOf touches only an image whose ctime is beyond the clock's current
 * tick, and the resize gives it a ctime from the clock as it is), so `after` and the settled stamp
 * still match.
 */
export class OwnImageChange {
  private after: ImageStamp | undefined;

  private constructor(
    private readonly ctx: DriverContext,
    private readonly volumeId: string,
    /** Whether `begin` found the image no longer matching its reference: a write from outside. */
    readonly outside: boolean,
  ) {}

  /**
   * One stat of the image, compared with `reference` (nothing to compare without one: no
   * checkpoint relies on the image then). Throws what stat(2) throws.
   */
  static async begin(ctx: DriverContext, volumeId: string, reference: ImageStamp | undefined): Promise<OwnImageChange> {
    const outside = !!reference && !sameStamp(reference, await ctx.clock.stat(ctx.store.layout.image('volume', volumeId)));
    return new OwnImageChange(ctx, volumeId, outside);
  }

  /**
   * Right after the change: stats the image (`after`, see the class) and applies to `r` (the
   * volume's record, read holding the metadata lock) what is known so far: `after` as its stamp,
   * and every checkpoint inconsistent when `begin` saw a write from outside. Throws what stat(2)
   * throws.
   */
  async edit(r: VolumeRecord): Promise<void> {
    this.after = await this.ctx.clock.stat(this.ctx.store.layout.image('volume', this.volumeId));
    if (this.outside) for (const c of r.checkpoints) c.consistent = false;
    r.imageStamp = this.after;
  }

  /**
   * Saves the image's new settled stamp, making every checkpoint inconsistent when something other
   * than the change wrote the image (see the class). Throws what stat(2) and the sidecar write throw.
   */
  async record(): Promise<void> {
    const { ctx, volumeId } = this;
    const image = ctx.store.layout.image('volume', volumeId);
    const after = this.after ?? (await ctx.clock.stat(image));
    const stamp = await ctx.imageStamp(volumeId);
    const same = sameStamp(after, stamp);
    const outside = this.outside || !same;
    await ctx.store.updateVolume(volumeId, (r) => {
      if (outside) for (const c of r.checkpoints) c.consistent = false;
      r.imageStamp = stamp;
    });
  }
}
