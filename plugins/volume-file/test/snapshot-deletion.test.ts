import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { deleteKilledAtImage, driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

/** 512-byte blocks allocated to the entries of `snapshots/` named after `id`, and their names. */
async function leftOf(directory: string, id: string): Promise<{ names: string[]; blocks: number }> {
  const dir = join(directory, 'snapshots');
  const names = (await readdir(dir)).filter((n) => n.startsWith(id)).sort();
  let blocks = 0;
  for (const n of names) blocks += (await stat(join(dir, n))).blocks;
  return { names, blocks };
}

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

  /** A volume with 4 MiB of data, a checkpoint and two snapshots, one of whose deletion was SIGKILLed at its image. */
  async function killedDeletion(whileStalled?: (id: string) => Promise<void>): Promise<{ volumeId: string; id: string; kept: string }> {
    const v = await t.driver.createVolume({ size: 8 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, patternBytes(4 * MiB, 9));
    await t.driver.detach(a.id);
    await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const s = await t.driver.createSnapshot(v.id, 'deleted');
    const kept = await t.driver.createSnapshot(v.id, 'kept');
    expect((await leftOf(t.dir, s.id)).names).toEqual([`${s.id}.cbt`, `${s.id}.img`, `${s.id}.json`]);
    expect((await leftOf(t.dir, s.id)).blocks).toBeGreaterThanOrEqual((4 * MiB) / 512);
    await deleteKilledAtImage(t.dir, 'snapshot', s.id, whileStalled && (() => whileStalled(s.id)));
    expect((await leftOf(t.dir, s.id)).names).toEqual([`${s.id}.cbt`, `${s.id}.deleting`, `${s.id}.img`]);
    return { volumeId: v.id, id: s.id, kept: kept.id };
  }

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
