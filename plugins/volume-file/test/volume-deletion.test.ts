import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileVolumeDriver } from '../src/index.js';
import { deleteKilledAtImage, driverPerTest, leftOf as leftIn } from './helpers.js';

/** 512-byte blocks allocated to the entries of `volumes/` named after `id`, and their names. */
const leftOf = (directory: string, id: string) => leftIn(directory, 'volume', id);

/**
 * Contract (deletion.ts): a deleteVolume killed midway — here SIGKILLed in a real process right
 * where it removes the image — never leaves an image that nothing names. The volume is gone at
 * once (not listed, NOT_FOUND), and the next listVolumes, in any process, removes what is left:
 * image, writer lock, bitmaps and the renamed sidecar, so the space comes back. A retried
 * deleteVolume finishes it too, and succeeds.
 */
describe('a volume deletion killed midway', () => {
  const t = driverPerTest();

  /** A volume with 4 MiB of data (pattern 5) and a checkpoint, whose deletion was SIGKILLed at its image; and a volume kept (helpers.ts). */
  const killedDeletion = (whileStalled?: (id: string) => Promise<void>) => deleteKilledAtImage(t, 'volume', 5, whileStalled);

  it('is finished by the next listVolumes: the volume is gone and its image space reclaimed', async () => {
    const { id, kept } = await killedDeletion();

    const fresh = new FileVolumeDriver({ directory: t.dir }); // as another process after the crash
    await expect(fresh.getVolume(id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await fresh.listVolumes()).map((x) => x.id)).toEqual([kept]);
    expect(await leftOf(t.dir, id)).toEqual({ names: [], blocks: 0 });
    expect((await fresh.getVolume(kept)).name).toBe('kept');
  });

  it('is finished by the next listVolumes even when another volume\'s sidecar is damaged (listed with status error)', async () => {
    const { id, kept } = await killedDeletion();
    await writeFile(join(t.dir, 'volumes', `${kept}.json`), '{"torn'); // damaged after the crash

    const fresh = new FileVolumeDriver({ directory: t.dir });
    expect((await fresh.listVolumes()).map((x) => [x.id, x.status])).toEqual([[kept, 'error']]);
    expect(await leftOf(t.dir, id)).toEqual({ names: [], blocks: 0 });
  });

  it('is finished by a retried deleteVolume, which succeeds; BUSY while it was still under way; NOT_FOUND once done', async () => {
    const fresh = new FileVolumeDriver({ directory: t.dir }); // the operator retrying
    const { id, kept } = await killedDeletion(async (stalled) => {
      await expect(fresh.deleteVolume(stalled)).rejects.toMatchObject({ code: 'BUSY' });
      expect((await leftOf(t.dir, stalled)).names).toEqual([`${stalled}.cbt`, `${stalled}.deleting`, `${stalled}.img`, `${stalled}.writer`]);
    });

    await fresh.deleteVolume(id);
    expect(await leftOf(t.dir, id)).toEqual({ names: [], blocks: 0 });
    await expect(fresh.deleteVolume(id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await fresh.listVolumes()).map((x) => x.id)).toEqual([kept]);
  });

  it('is retried by a deleteVolume after the same instance\'s listing finished it: that delete succeeds, once; another instance, which finished nothing, says NOT_FOUND', async () => {
    const { id, kept } = await killedDeletion();
    const fresh = new FileVolumeDriver({ directory: t.dir }); // the retrying process, which lists first
    expect((await fresh.listVolumes()).map((x) => x.id)).toEqual([kept]);
    expect(await leftOf(t.dir, id)).toEqual({ names: [], blocks: 0 });

    await expect(new FileVolumeDriver({ directory: t.dir }).deleteVolume(id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await fresh.deleteVolume(id);
    await expect(fresh.deleteVolume(id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(fresh.deleteVolume(kept.replace(/^./, (c) => (c === '0' ? '1' : '0')))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await fresh.getVolume(kept)).name).toBe('kept');
  });
});
