/**
 * Changed-block tracking across driver instances on the same volumes (two processes): the flow
 * takes a checkpoint in one process while the volume's user writes through another, and a later
 * backup asks a third. Changes an instance keeps to itself are lost to the others.
 */
import assert from 'node:assert/strict';
import type { ByteRange, Extent, VolumeDriver } from '@cairn/core';
import type { Group } from '../harness.js';
import { patternBytes, rejectsWithCode } from '../harness.js';
import type { VolumeDriverContext } from './context.js';

/** The changes since `checkpointId` asked through a new read-only attachment of `driver`, or undefined for NOT_FOUND. */
async function changedThrough(driver: VolumeDriver, volumeId: string, checkpointId: string): Promise<Extent[] | undefined> {
  const a = await driver.attach({ kind: 'volume', id: volumeId }, 'ro');
  try {
    const asked = a.device.extents({ kind: 'changed', since: checkpointId });
    return await asked.catch(async (err: { code?: unknown }) => {
      if (err?.code !== 'NOT_FOUND') throw err;
      await rejectsWithCode(asked, 'NOT_FOUND', 'extents(changed) through another instance', driver.name);
      return undefined;
    });
  } finally {
    await driver.detach(a.id);
  }
}

/** Every byte of `writes` lies in `extents` (when there is an answer: NOT_FOUND makes the backup read everything). */
function assertCovers(extents: Extent[] | undefined, writes: ByteRange[], what: string): void {
  if (!extents) return;
  for (const w of writes) {
    for (const at of [w.offset, w.offset + Math.floor(w.length / 2), w.offset + w.length - 1]) {
      assert.ok(extents.some((e) => e.offset <= at && at < e.offset + e.length), `${what}: written byte ${at} is not reported (extents ${JSON.stringify(extents)})`);
    }
  }
}

/** Runs when the suite has a `peer` and the driver declares `changedBlockTracking`. */
export const changedExtentsAcrossInstances: Group<VolumeDriverContext> = {
  name: 'changed-block tracking across two driver instances on the same volumes',
  cases: [
    {
      name: 'writes made through the second instance after a checkpoint of the first are reported to either instance, or the checkpoint is NOT_FOUND: never fewer',
      async run({ driver, peer, volumeSize }) {
        assert.ok(peer, 'the suite was given no peer instance');
        const v = await driver.createVolume({ size: volumeSize });
        const cp = await driver.changedBlockTracking!.createCheckpoint(v.id);
        const writes = [
          { offset: 0, length: 100 },
          { offset: 300_000, length: 4096 },
          { offset: volumeSize / 2 + 777, length: 200_000 },
          { offset: volumeSize - 4096, length: 4096 },
        ];
        const w = await peer.attach({ kind: 'volume', id: v.id }, 'rw');
        for (const [i, r] of writes.entries()) await w.device.write(r.offset, patternBytes(r.length, 110 + i));
        await w.device.flush();
        await peer.detach(w.id);
        assertCovers(await changedThrough(driver, v.id, cp.id), writes, 'changed extents asked through the instance that took the checkpoint');
        assertCovers(await changedThrough(peer, v.id, cp.id), writes, 'changed extents asked through the instance that wrote');
        await driver.changedBlockTracking!.deleteCheckpoint(v.id, cp.id);
      },
    },
  ],
};
