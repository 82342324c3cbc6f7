import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { deleteKilledAtImage, driverPerTest, leftOf as leftIn } from './helpers.js';

const MiB = 1024 * 1024;

/** 512-byte blocks allocated to the entries of `snapshots/` named after `id`, and their names. */
const leftOf = (directory: string, id: string) => leftIn(directory, 'snapshot', id);

/**
 * Contract (deletion.ts): a deleteSnapshot killed midway — SIGKILLed in a real process right where
 * it removes the image copy — leaves no copy that nothing names until an age sweep: the snapshot
 * is gone at once (not listed, NOT_FOUND), and the next listSnapshots or listVolumes, in any
 * process, removes the copy, its bitmaps and the renamed sidecar, so the space comes back. A
 * retried deleteSnapshot finishes it too, and succeeds; while the killed deletion was still under
 * way, the retry was BUSY and changed nothing.
 */
describe('a snapshot deletion killed midway', () => {
  const t = driverPerTest();

  /** A volume with 4 MiB of data (pattern 9), a checkpoint and two snapshots, one of whose deletion was SIGKILLed at its image (helpers.ts). */
  const killedDeletion = (whileStalled?: (id: string) => Promise<void>) => deleteKilledAtImage(t, 'snapshot', 9, whileStalled);

  it('is finished by the next listSnapshots: the snapshot is gone and its copy\'s space reclaimed', async () => {
    const { volumeId, id, kept } = await killedDeletion();

    const fresh = new FileVolumeDriver({ directory: t.dir }); // as another process after the crash
    await expect(fresh.attach({ kind: 'snapshot', id }, 'ro')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await fresh.listSnapshots(volumeId)).map((x) => x.id)).toEqual([kept]);
    expect(await leftOf(t.dir, id)).toEqual({ names: [], blocks: 0 });
    const r = await fresh.attach({ kind: 'snapshot', id: kept }, 'ro');
    expect((await r.device.read(0, 4 * MiB)).equals(patternBytes(4 * MiB, 9))).toBe(true);
    await fresh.detach(r.id);
  });

  it('is finished by the next listVolumes too', async () => {
    const { id } = await killedDeletion();

    await new FileVolumeDriver({ directory: t.dir }).listVolumes();
    expect(await leftOf(t.dir, id)).toEqual({ names: [], blocks: 0 });
  });

  it('is finished by a retried deleteSnapshot, which succeeds; BUSY while it was still under way', async () => {
    const fresh = new FileVolumeDriver({ directory: t.dir }); // the operator retrying
    const { volumeId, id, kept } = await killedDeletion(async (stalled) => {
      await expect(fresh.deleteSnapshot(stalled)).rejects.toMatchObject({ code: 'BUSY' });
      await fresh.listVolumes(); // leaves a deletion under way to itself
      expect((await leftOf(t.dir, stalled)).names).toEqual([`${stalled}.cbt`, `${stalled}.deleting`, `${stalled}.img`]);
    });

    await fresh.deleteSnapshot(id);
    expect(await leftOf(t.dir, id)).toEqual({ names: [], blocks: 0 });
    await expect(fresh.deleteSnapshot(id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await fresh.listSnapshots(volumeId)).map((x) => x.id)).toEqual([kept]);
  });
});
