/**
 * Snapshot data around the changes a snapshot chain goes through: deleting snapshots (a driver
 * merges or drops backing data then) and the allocated extents a snapshot device reports while its
 * volume is rewritten (what a backup of the snapshot reads).
 */
import type { Case } from '../harness.js';
import { assertSameBytes, patternBytes } from '../harness.js';
import type { VolumeDriverContext } from './context.js';
import { assertAllocatedTruthful } from './extent-truth.js';

/** The whole volume through a new read-only attachment. */
async function readVolume(ctx: VolumeDriverContext, id: string): Promise<Buffer> {
  const a = await ctx.driver.attach({ kind: 'volume', id }, 'ro');
  try {
    return await a.device.read(0, ctx.volumeSize);
  } finally {
    await ctx.driver.detach(a.id);
  }
}

const deleteKeepsData: Case<VolumeDriverContext> = {
  name: 'deleteSnapshot changes no data: once the older snapshot is deleted the newer one and the volume read what they held, once both are the volume still does',
  async run(ctx) {
    // A delete merges or drops the snapshot's data: merged the wrong way, the volume goes back
    // to the snapshot's time; dropped while the volume still shares it, its unchanged parts read zeros.
    const { driver, volumeSize } = ctx;
    const v = await driver.createVolume({ size: volumeSize });
    const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const expected = patternBytes(volumeSize, 95); // A
    await rw.device.write(0, expected);
    const s1 = await driver.createSnapshot(v.id);
    const b = patternBytes(300_000, 96);
    await rw.device.write(65536 + 100, b);
    b.copy(expected, 65536 + 100);
    const atS2 = Buffer.from(expected);
    const s2 = await driver.createSnapshot(v.id);
    const c = patternBytes(200_000, 97);
    await rw.device.write(200_000, c); // overlaps B
    c.copy(expected, 200_000);
    await rw.device.writeZeroes(volumeSize - 65536, 65536);
    expected.fill(0, volumeSize - 65536);
    await rw.device.flush();
    await driver.detach(rw.id);

    await driver.deleteSnapshot(s1.id);
    const s = await driver.attach({ kind: 'snapshot', id: s2.id }, 'ro');
    assertSameBytes(await s.device.read(0, volumeSize), atS2, 'the newer snapshot after the older one was deleted');
    await driver.detach(s.id);
    assertSameBytes(await readVolume(ctx, v.id), expected, 'the volume after the older snapshot was deleted');
    await driver.deleteSnapshot(s2.id);
    assertSameBytes(await readVolume(ctx, v.id), expected, 'the volume after both snapshots were deleted');
  },
};

const snapshotAllocated: Case<VolumeDriverContext> = {
  name: "a snapshot device's allocated extents describe the snapshot's bytes, not the volume's, after the volume is zeroed and rewritten",
  async run({ driver, volumeSize }) {
    // A backup of the snapshot reads only its allocated extents: extents answered from the live
    // volume skip the data the volume has zeroed since.
    const v = await driver.createVolume({ size: volumeSize });
    const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await rw.device.write(0, patternBytes(volumeSize / 2, 98));
    await rw.device.write(volumeSize - 65536, patternBytes(65536, 99));
    await rw.device.flush();
    const snap = await driver.createSnapshot(v.id);
    await rw.device.writeZeroes(0, volumeSize / 4);
    await rw.device.writeZeroes(volumeSize - 65536, 65536);
    await rw.device.write(volumeSize / 2 + 4096, patternBytes(65536, 100));
    await rw.device.flush();
    const s = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
    await assertAllocatedTruthful(s.device, 'allocated extents of the snapshot');
    await driver.detach(s.id);
    await assertAllocatedTruthful(rw.device, 'allocated extents of the volume');
    await driver.detach(rw.id);
    await driver.deleteSnapshot(snap.id);
  },
};

/** Added to the snapshots group. */
export const snapshotDataCases: Case<VolumeDriverContext>[] = [deleteKeepsData, snapshotAllocated];
