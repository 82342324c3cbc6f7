import assert from 'node:assert/strict';
import type { Attachment, VolumeDriver, VolumeDriverCapabilities } from '@cairn/core';
import type { Case, Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import { concurrentAttaches } from './concurrent-attach.js';
import type { VolumeDriverContext } from './context.js';

/**
 * The two instances a conflict case uses: `holder` attaches first, `other` attaches next to it.
 * In one instance both are the same driver; across instances `other` is the suite's peer.
 */
interface Pair {
  holder: VolumeDriver;
  other: VolumeDriver;
}

/** A volume of `holder` with known bytes, written through a read-write attachment and detached. */
async function volumeWithData(driver: VolumeDriver, size: number, seed: number): Promise<{ id: string; data: Buffer }> {
  const v = await driver.createVolume({ size });
  const data = patternBytes(size, seed);
  const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
  await rw.device.write(0, data);
  await rw.device.flush();
  await driver.detach(rw.id);
  return { id: v.id, data };
}

/** The whole volume as read through a fresh read-only attachment of `driver`. */
async function readWhole(driver: VolumeDriver, volumeId: string, size: number): Promise<Buffer> {
  const a = await driver.attach({ kind: 'volume', id: volumeId }, 'ro');
  try {
    return await a.device.read(0, size);
  } finally {
    await driver.detach(a.id);
  }
}

/** Each instance's view of the volume's status (the same instance twice in one instance). */
async function statuses({ holder, other }: Pair, volumeId: string): Promise<string[]> {
  return [(await holder.getVolume(volumeId)).status, (await other.getVolume(volumeId)).status];
}

/**
 * The readers–writer rule of `VolumeDriver.attach`, with `pair` choosing where the second attach
 * comes from. `sharesReadOnly`: whether a second read-only attachment is allowed there.
 */
function conflictCases(where: string, pair: (ctx: VolumeDriverContext) => Pair, sharesReadOnly: boolean): Case<VolumeDriverContext>[] {
  return [
    {
      name: `attach(rw) next to a read-only attachment fails with BUSY${where}`,
      async run(ctx) {
        const { holder, other } = pair(ctx);
        const v = await holder.createVolume({ size: ctx.volumeSize });
        const ro = await holder.attach({ kind: 'volume', id: v.id }, 'ro');
        await rejectsWithCode(other.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) next to ro', ctx.driver.name);
        await holder.detach(ro.id);
      },
    },
    {
      name: `attach(ro) next to a read-write attachment fails with BUSY${where}`,
      async run(ctx) {
        const { holder, other } = pair(ctx);
        const v = await holder.createVolume({ size: ctx.volumeSize });
        const rw = await holder.attach({ kind: 'volume', id: v.id }, 'rw');
        await rejectsWithCode(other.attach({ kind: 'volume', id: v.id }, 'ro'), 'BUSY', 'attach(ro) next to rw', ctx.driver.name);
        await rejectsWithCode(other.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) next to rw', ctx.driver.name);
        await holder.detach(rw.id);
      },
    },
    sharesReadOnly
      ? {
          name: `two read-only attachments of one volume coexist and read the same bytes${where}`,
          async run(ctx) {
            const { holder, other } = pair(ctx);
            const { id, data } = await volumeWithData(holder, ctx.volumeSize, 31);
            const a = await holder.attach({ kind: 'volume', id }, 'ro');
            const b = await other.attach({ kind: 'volume', id }, 'ro');
            assertSameBytes(await a.device.read(0, ctx.volumeSize), data, 'first read-only attachment');
            assertSameBytes(await b.device.read(0, ctx.volumeSize), data, 'second read-only attachment');
            assert.deepEqual(await statuses(pair(ctx), id), ['available', 'available'], 'read-only attachments leave the volume available');
            await other.detach(b.id);
            await holder.detach(a.id);
          },
        }
      : {
          name: `a second read-only attachment of one volume fails with BUSY${where}`,
          async run(ctx) {
            const { holder, other } = pair(ctx);
            const v = await holder.createVolume({ size: ctx.volumeSize });
            const a = await holder.attach({ kind: 'volume', id: v.id }, 'ro');
            await rejectsWithCode(other.attach({ kind: 'volume', id: v.id }, 'ro'), 'BUSY', 'second attach(ro)', ctx.driver.name);
            await holder.detach(a.id);
          },
        },
    {
      name: `once the conflicting attachments are detached, attach(rw) and attach(ro) work again${where}`,
      async run(ctx) {
        const { holder, other } = pair(ctx);
        const v = await holder.createVolume({ size: ctx.volumeSize });
        const readers: [VolumeDriver, Attachment][] = [[holder, await holder.attach({ kind: 'volume', id: v.id }, 'ro')]];
        if (sharesReadOnly) readers.push([other, await other.attach({ kind: 'volume', id: v.id }, 'ro')]);
        await rejectsWithCode(other.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) while read', ctx.driver.name);
        for (const [driver, a] of readers) await driver.detach(a.id);

        const rw = await other.attach({ kind: 'volume', id: v.id }, 'rw');
        const patch = patternBytes(65536, 32);
        await rw.device.write(65536, patch);
        await rejectsWithCode(holder.attach({ kind: 'volume', id: v.id }, 'ro'), 'BUSY', 'attach(ro) while written', ctx.driver.name);
        await other.detach(rw.id);

        const ro = await holder.attach({ kind: 'volume', id: v.id }, 'ro');
        assertSameBytes(await ro.device.read(65536, 65536), patch, 'the write made once the readers were gone');
        await holder.detach(ro.id);
        const rw2 = await holder.attach({ kind: 'volume', id: v.id }, 'rw');
        await holder.detach(rw2.id);
        assert.deepEqual(await statuses(pair(ctx), v.id), ['available', 'available']);
      },
    },
    {
      name: `a refused attach changes nothing: the volume keeps its bytes and status, and the attachment held keeps working${where}`,
      async run(ctx) {
        const p = pair(ctx);
        const { holder, other } = p;
        const size = ctx.volumeSize;
        const { id, data } = await volumeWithData(holder, size, 33);

        // Held read-write: both attaches are refused; the writer still reads and writes.
        const rw = await holder.attach({ kind: 'volume', id }, 'rw');
        const whileWritten = await statuses(p, id);
        assert.equal(whileWritten[0], 'in-use', 'status seen by the instance that writes');
        await rejectsWithCode(other.attach({ kind: 'volume', id }, 'ro'), 'BUSY', 'attach(ro) next to rw', ctx.driver.name);
        await rejectsWithCode(other.attach({ kind: 'volume', id }, 'rw'), 'BUSY', 'attach(rw) next to rw', ctx.driver.name);
        assert.deepEqual(await statuses(p, id), whileWritten, 'status after the refused attaches');
        assertSameBytes(await rw.device.read(0, size), data, 'the writer reads the volume after the refusals');
        const patch = patternBytes(100_000, 34);
        await rw.device.write(size / 2 + 7, patch);
        patch.copy(data, size / 2 + 7);
        await rw.device.flush();
        await holder.detach(rw.id);
        assert.deepEqual(await statuses(p, id), ['available', 'available'], 'status once the writer is gone');

        // Held read-only: a write attach is refused; the reader still reads the same bytes.
        const ro = await holder.attach({ kind: 'volume', id }, 'ro');
        await rejectsWithCode(other.attach({ kind: 'volume', id }, 'rw'), 'BUSY', 'attach(rw) next to ro', ctx.driver.name);
        if (!sharesReadOnly) await rejectsWithCode(other.attach({ kind: 'volume', id }, 'ro'), 'BUSY', 'second attach(ro)', ctx.driver.name);
        assert.deepEqual(await statuses(p, id), ['available', 'available'], 'status after the refused attach next to a reader');
        assertSameBytes(await ro.device.read(0, size), data, 'the reader reads the volume after the refusal');
        await holder.detach(ro.id);

        assertSameBytes(await readWhole(other, id, size), data, 'the volume afterwards');
        assert.equal((await other.getVolume(id)).size, size, 'size unchanged');

        // Nothing was left held by the refused attaches (an image lock, say): every instance at
        // hand, the suite's peer included, may write the volume now.
        for (const driver of new Set([holder, other, ...(ctx.peer ? [ctx.peer] : [])])) {
          const w = await driver.attach({ kind: 'volume', id }, 'rw');
          await driver.detach(w.id);
        }
      },
    },
  ];
}

/**
 * Runs when the driver declares `attach`: a volume's attachments in one driver instance are one
 * read-write or any number of read-only ones (one only, without `multiAttachReadOnly`); a
 * conflicting attach fails with BUSY and changes nothing. Attachments of snapshots never
 * conflict with their volume's.
 */
export function attachConflicts(caps: VolumeDriverCapabilities): Group<VolumeDriverContext> {
  const cases = [...conflictCases('', ({ driver }) => ({ holder: driver, other: driver }), caps.multiAttachReadOnly), ...concurrentAttaches];
  if (caps.snapshots) {
    cases.push({
      name: "attachments of a snapshot never conflict with the volume's, in either order",
      async run({ driver, volumeSize }) {
        const { id, data } = await volumeWithData(driver, volumeSize, 35);
        const snap = await driver.createSnapshot(id);
        const s1 = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
        const rw = await driver.attach({ kind: 'volume', id }, 'rw'); // the volume's writer next to a snapshot's reader
        await rw.device.write(0, Buffer.alloc(65536, 0xab));
        const s2 = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro'); // and a snapshot's reader next to the writer
        assertSameBytes(await s1.device.read(0, volumeSize), data, 'snapshot read by the attachment made before the writer');
        assertSameBytes(await s2.device.read(0, volumeSize), data, 'snapshot read by the attachment made after the writer');
        await driver.detach(s2.id);
        await driver.detach(rw.id);
        await driver.detach(s1.id);
        await driver.deleteSnapshot(snap.id);
      },
    });
  }
  return { name: 'attach conflicts: one read-write or any number of read-only attachments', cases };
}

/**
 * Runs when the suite is given a `peer`: the same rule between two driver instances on the same
 * volumes, as between two processes. `sharesReadOnly`: read-only attachments in both at once are
 * allowed; without it, the opposite case runs (the second one fails with BUSY). `snapshots`: the
 * driver has the capability, so a delete of a snapshot the other instance has attached runs too.
 */
export function attachConflictsAcrossInstances(sharesReadOnly: boolean, snapshots = false): Group<VolumeDriverContext> {
  const pair = ({ driver, peer }: VolumeDriverContext): Pair => {
    assert.ok(peer, 'the suite was given no peer instance');
    return { holder: driver, other: peer };
  };
  const cases = conflictCases(' (second instance)', pair, sharesReadOnly);
  if (snapshots) {
    cases.push({
      name: 'deleteSnapshot of a snapshot the second instance has attached fails with BUSY, and that attachment keeps reading it',
      async run(ctx) {
        const { holder, other } = pair(ctx);
        const v = await volumeWithData(holder, ctx.volumeSize, 41);
        const snap = await holder.createSnapshot(v.id);
        const a = await other.attach({ kind: 'snapshot', id: snap.id }, 'ro');
        await rejectsWithCode(holder.deleteSnapshot(snap.id), 'BUSY', 'deleteSnapshot while the other instance reads it', ctx.driver.name);
        assertSameBytes(await a.device.read(0, ctx.volumeSize), v.data, 'the snapshot read by the other instance');
        await other.detach(a.id);
        await holder.deleteSnapshot(snap.id);
        assert.deepEqual(await other.listSnapshots(v.id), [], 'the snapshot is gone for the other instance');
      },
    });
  }
  return { name: 'attach conflicts across two driver instances on the same volumes', cases };
}
