import assert from 'node:assert/strict';
import type { Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { VolumeDriverContext } from './context.js';
import { snapshotDataCases } from './snapshot-data.js';

/** Runs when the driver declares `snapshots`. */
export const snapshotCases: Group<VolumeDriverContext> = {
  name: 'snapshots',
  cases: [
    {
      name: 'attach(snapshot) reads the data of its time: writes after the snapshot do not show in it',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const before = patternBytes(volumeSize, 11);
        await rw.device.write(0, before);
        await rw.device.flush();
        const snap = await driver.createSnapshot(v.id, 'snap-1');
        assert.equal(snap.volumeId, v.id);
        assert.equal(snap.size, volumeSize);
        const after = Buffer.from(before);
        const patch = patternBytes(300_000, 12);
        patch.copy(after, 4096);
        await rw.device.write(4096, patch);
        await rw.device.writeZeroes(volumeSize - 8192, 8192);
        after.fill(0, volumeSize - 8192);
        await rw.device.flush();
        const ro = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
        assert.equal(ro.device.mode, 'ro');
        assertSameBytes(await ro.device.read(0, volumeSize), before, 'snapshot content');
        assertSameBytes(await rw.device.read(0, volumeSize), after, 'volume content');
        await driver.detach(ro.id);
        await driver.detach(rw.id);
        await driver.deleteSnapshot(snap.id);
      },
    },
    {
      name: 'createSnapshot with an empty, too long or control-character name fails with INVALID_INPUT and takes no snapshot',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        for (const name of ['', 'a'.repeat(256), 'line\nbreak', 'nul\u0000', 'c1\u0085']) {
          const err = await rejectsWithCode(driver.createSnapshot(v.id, name), 'INVALID_INPUT', `createSnapshot(name ${JSON.stringify(name.slice(0, 20))})`, driver.name);
          assert.equal((err as { details?: { field?: unknown } }).details?.field, 'name', 'details.field names the field');
        }
        assert.equal((await driver.listSnapshots(v.id)).length, 0, 'a refused snapshot must leave nothing behind');
        const longest = 's'.repeat(255);
        const snap = await driver.createSnapshot(v.id, longest);
        assert.equal(snap.name, longest);
        await driver.deleteSnapshot(snap.id);
      },
    },
    {
      name: 'attach(snapshot, rw) fails with INVALID_INPUT',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const snap = await driver.createSnapshot(v.id);
        await rejectsWithCode(driver.attach({ kind: 'snapshot', id: snap.id }, 'rw'), 'INVALID_INPUT', 'attach(snapshot, rw)', driver.name);
        await driver.deleteSnapshot(snap.id);
      },
    },
    {
      name: 'listSnapshots lists a volume\'s snapshots oldest first and deleteSnapshot removes them',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const s1 = await driver.createSnapshot(v.id, 'one');
        const s2 = await driver.createSnapshot(v.id, 'two');
        assert.deepEqual((await driver.listSnapshots(v.id)).map((s) => s.id), [s1.id, s2.id]);
        await driver.deleteSnapshot(s1.id);
        assert.deepEqual((await driver.listSnapshots(v.id)).map((s) => s.id), [s2.id]);
        await rejectsWithCode(driver.attach({ kind: 'snapshot', id: s1.id }, 'ro'), 'NOT_FOUND', 'attach(deleted snapshot)', driver.name);
        await driver.deleteSnapshot(s2.id);
      },
    },
    {
      name: 'createSnapshot of an unknown volume and deleteSnapshot of an unknown id fail with NOT_FOUND',
      async run({ driver }) {
        await rejectsWithCode(driver.createSnapshot('00000000-0000-4000-8000-000000000001'), 'NOT_FOUND', 'createSnapshot', driver.name);
        await rejectsWithCode(driver.deleteSnapshot('00000000-0000-4000-8000-000000000002'), 'NOT_FOUND', 'deleteSnapshot', driver.name);
      },
    },
    {
      name: 'listSnapshots of an unknown or deleted volume fails with NOT_FOUND',
      async run({ driver, volumeSize }) {
        // An empty list would tell a caller (deleting the volume, pruning) that a wrong id has
        // no snapshots.
        await rejectsWithCode(driver.listSnapshots('00000000-0000-4000-8000-000000000006'), 'NOT_FOUND', 'listSnapshots(unknown volume)', driver.name);
        const v = await driver.createVolume({ size: volumeSize });
        await driver.deleteVolume(v.id);
        await rejectsWithCode(driver.listSnapshots(v.id), 'NOT_FOUND', 'listSnapshots(deleted volume)', driver.name);
      },
    },
    {
      name: 'deleteVolume of a volume with snapshots fails with BUSY and keeps the volume and its snapshots readable',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const data = patternBytes(volumeSize, 63);
        const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await rw.device.write(0, data);
        await driver.detach(rw.id);
        const snap = await driver.createSnapshot(v.id);
        await rejectsWithCode(driver.deleteVolume(v.id), 'BUSY', 'deleteVolume(with a snapshot)', driver.name);
        assert.deepEqual((await driver.listSnapshots(v.id)).map((s) => s.id), [snap.id], 'the snapshot is kept');
        const s = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
        assertSameBytes(await s.device.read(0, volumeSize), data, 'the snapshot after the refused delete');
        await driver.detach(s.id);
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        assertSameBytes(await a.device.read(0, volumeSize), data, 'the volume after the refused delete');
        await driver.detach(a.id);
        await driver.deleteSnapshot(snap.id);
        await driver.deleteVolume(v.id);
        await rejectsWithCode(driver.getVolume(v.id), 'NOT_FOUND', 'getVolume(deleted)', driver.name);
      },
    },
    {
      name: 'deleteSnapshot of an attached snapshot fails with BUSY, and the attachment keeps reading it',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const data = patternBytes(volumeSize, 64);
        const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await rw.device.write(0, data);
        await driver.detach(rw.id);
        const snap = await driver.createSnapshot(v.id);
        const s = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
        await rejectsWithCode(driver.deleteSnapshot(snap.id), 'BUSY', 'deleteSnapshot(attached)', driver.name);
        assertSameBytes(await s.device.read(0, volumeSize), data, 'the snapshot read by its attachment after the refused delete');
        assert.deepEqual((await driver.listSnapshots(v.id)).map((x) => x.id), [snap.id], 'the snapshot is kept');
        await driver.detach(s.id);
        await driver.deleteSnapshot(snap.id);
      },
    },
    {
      name: 'a snapshot device refuses reads past its end and writes with INVALID_INPUT',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const snap = await driver.createSnapshot(v.id);
        const s = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
        assert.equal(s.device.size, volumeSize);
        await rejectsWithCode(s.device.read(volumeSize - 10, 11), 'INVALID_INPUT', 'snapshot read past end', driver.name);
        await rejectsWithCode(s.device.read(volumeSize, 512), 'INVALID_INPUT', 'snapshot read at end', driver.name);
        await rejectsWithCode(s.device.write(0, Buffer.alloc(512, 1)), 'INVALID_INPUT', 'snapshot write', driver.name);
        await rejectsWithCode(s.device.writeZeroes(0, 512), 'INVALID_INPUT', 'snapshot writeZeroes', driver.name);
        await driver.detach(s.id);
        await driver.deleteSnapshot(snap.id);
      },
    },
    {
      name: 'two snapshots of one volume stay isolated from each other',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await rw.device.write(0, Buffer.alloc(65536, 1));
        const s1 = await driver.createSnapshot(v.id);
        await rw.device.write(0, Buffer.alloc(65536, 2));
        const s2 = await driver.createSnapshot(v.id);
        await rw.device.write(0, Buffer.alloc(65536, 3));
        await driver.detach(rw.id);
        for (const [snap, byte] of [[s1, 1], [s2, 2]] as const) {
          const a = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
          assertSameBytes(await a.device.read(0, 65536), Buffer.alloc(65536, byte), `snapshot ${byte}`);
          await driver.detach(a.id);
        }
        await driver.deleteSnapshot(s2.id);
        await driver.deleteSnapshot(s1.id);
      },
    },
    ...snapshotDataCases,
  ],
};

/** Runs when the driver does not declare `snapshots`: the calls are refused, not ignored. */
export const snapshotRefusals: Group<VolumeDriverContext> = {
  name: 'snapshots (not supported)',
  cases: [
    {
      name: 'createSnapshot fails with NOT_SUPPORTED',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        await rejectsWithCode(driver.createSnapshot(v.id), 'NOT_SUPPORTED', 'createSnapshot', driver.name);
      },
    },
  ],
};
