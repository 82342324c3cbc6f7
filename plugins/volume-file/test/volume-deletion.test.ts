import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { deleteKilledAtImage, driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

/** 512-byte blocks allocated to the entries of `volumes/` named after `id`, and their names. */
async function leftOf(directory: string, id: string): Promise<{ names: string[]; blocks: number }> {
  const dir = join(directory, 'volumes');
  const names = (await readdir(dir)).filter((n) => n.startsWith(id)).sort();
  let blocks = 0;
  for (const n of names) blocks += (await stat(join(dir, n))).blocks;
  return { names, blocks };
}

/**
 * Contract (deletion.ts): a deleteVolume killed midway — here SIGKILLed in a real process right
 * where it removes the image — never leaves an image that nothing names. The volume is gone at
 * once (not listed, NOT_FOUND), and the next listVolumes, in any process, removes what is left:
 * image, writer lock, bitmaps and the renamed sidecar, so the space comes back. A retried
 * deleteVolume finishes it too, and succeeds.
 */
describe('a volume deletion killed midway', () => {
  const t = driverPerTest();

  /** A volume with 4 MiB of data and a checkpoint, whose deletion was SIGKILLed at its image; and a volume kept. */
  async function killedDeletion(whileStalled?: (id: string) => Promise<void>): Promise<{ id: string; kept: string }> {
    const v = await t.driver.createVolume({ size: 8 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, patternBytes(4 * MiB, 5));
    await t.driver.detach(a.id);
    await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const kept = await t.driver.createVolume({ size: MiB, name: 'kept' });
    expect((await leftOf(t.dir, v.id)).blocks).toBeGreaterThanOrEqual((4 * MiB) / 512);
    await deleteKilledAtImage(t.dir, 'volume', v.id, whileStalled && (() => whileStalled(v.id)));
    expect((await leftOf(t.dir, v.id)).names).toContain(`${v.id}.deleting`);
    return { id: v.id, kept: kept.id };
  }

  it('is finished by the next listVolumes: the volume is gone and its image space reclaimed', async () => {
    const { id, kept } = await killedDeletion();

    const fresh = new FileVolumeDriver({ directory: t.dir }); // as another process after the crash
    await expect(fresh.getVolume(id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await fresh.listVolumes()).map((x) => x.id)).toEqual([kept]);
    expect(await leftOf(t.dir, id)).toEqual({ names: [], blocks: 0 });
    expect((await fresh.getVolume(kept)).name).toBe('kept');
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
});
