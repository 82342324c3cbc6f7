import { sameStamp, type ImageStamp } from '@cairn/core';
import type { DriverContext } from './driver-context.js';

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
 * `begin` compares the image with `reference`, the stamp the sidecar held when the caller last
 * checked the image (recover): a write from outside made since that check (while the caller saved
 * bitmaps, say) would otherwise be absorbed by the new stamp. `record` stats the image at once, then
 * takes the settled stamp (core's settledStampOf, which may wait one tick of a coarse clock) and
 * compares the two: a write from outside made while settling would otherwise be absorbed as well.
 * On either mismatch every checkpoint of the volume is made inconsistent (as recover does); the
 * settled stamp is saved either way. Not caught: a write landing between `begin`'s stat and
 * `record`'s first stat (the change's few system calls), at any timestamp granularity: it is
 * absorbed with the change. Needless mismatches (a full backup, never a wrong incremental): two
 * processes healing one interrupted extend at once (an attach heals under a shared lock: the
 * second sees the first's growth as an outside write), and a clock set back (settling touches the
 * image, so its stamp after settling differs from the stat before).
 */
export class OwnImageChange {
  private constructor(
    private readonly ctx: DriverContext,
    private readonly volumeId: string,
    private readonly outside: boolean,
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
   * Saves the image's new stamp, making every checkpoint inconsistent when something other than
   * the change wrote the image (see the class). Throws what stat(2) and the sidecar write throw.
   */
  async record(): Promise<void> {
    const { ctx, volumeId } = this;
    const after = await ctx.clock.stat(ctx.store.layout.image('volume', volumeId));
    const stamp = await ctx.imageStamp(volumeId);
    const outside = this.outside || !sameStamp(after, stamp);
    await ctx.store.updateVolume(volumeId, (r) => {
      if (outside) for (const c of r.checkpoints) c.consistent = false;
      r.imageStamp = stamp;
    });
  }
}
