import assert from 'node:assert/strict';
import type { ByteRange, Extent } from '@cairn/core';
import type { Group } from '../harness.js';
import { patternBytes, rejectsWithCode } from '../harness.js';
import type { VolumeDriverContext } from './context.js';
import { allocatedExtentEdgeCases, changedExtentEdgeCases } from './extent-edges.js';
import { zeroFlaggedExtents } from './extent-truth.js';

/**
 * Asserts `extents` are as BlockDevice.extents promises: integer offsets and lengths, inside
 * `range`, sorted and non-overlapping. Consumers (the backup writer) refuse any other list.
 */
function assertWellFormed(extents: Extent[], range: ByteRange, what: string): void {
  let from = range.offset;
  for (const e of extents) {
    assert.ok(Number.isSafeInteger(e.offset) && Number.isSafeInteger(e.length) && e.length >= 0, `${what}: offset and length must be integers (extent ${JSON.stringify(e)})`);
    assert.ok(e.offset + e.length <= range.offset + range.length, `${what}: extent ${JSON.stringify(e)} ends past ${range.offset + range.length}`);
    assert.ok(e.offset >= from, `${what}: extents not sorted and disjoint, or before ${range.offset} (extents ${JSON.stringify(extents)})`);
    from = e.offset + e.length;
  }
}

/** Asserts `extents` are well formed, cover every written range and stretch past them by less than `unit` each side. */
function assertExactWithin(extents: Extent[], written: ByteRange[], unit: number, size: number, what: string): void {
  assertWellFormed(extents, { offset: 0, length: size }, what);
  const covered = (offset: number) => extents.some((e) => e.offset <= offset && offset < e.offset + e.length);
  for (const w of written) {
    for (const probe of [w.offset, w.offset + Math.floor(w.length / 2), w.offset + w.length - 1]) {
      assert.ok(covered(probe), `${what}: written byte ${probe} is not reported (extents ${JSON.stringify(extents)})`);
    }
  }
  const allowed = written.map((w) => {
    const start = Math.floor(w.offset / unit) * unit;
    const end = Math.min(Math.ceil((w.offset + w.length) / unit) * unit, size);
    return { start, end };
  });
  for (const e of extents) {
    for (let pos = e.offset; pos < e.offset + e.length; pos += Math.min(unit, e.offset + e.length - pos)) {
      assert.ok(allowed.some((a) => a.start <= pos && pos < a.end), `${what}: byte ${pos} reported but never written (extents ${JSON.stringify(extents)})`);
    }
  }
}

const scattered = (size: number): ByteRange[] => [
  { offset: 0, length: 100 },
  { offset: 200_000, length: 4096 },
  { offset: size / 2 + 777, length: 300_000 },
  { offset: size - 4096, length: 4096 },
];

export const allocatedExtents: Group<VolumeDriverContext> = {
  name: 'allocated extents',
  cases: [
    {
      name: 'extents(allocated) covers every written byte and everything outside it reads as zeros',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const writes = scattered(volumeSize);
        for (const [i, w] of writes.entries()) await a.device.write(w.offset, patternBytes(w.length, 100 + i));
        await a.device.flush();
        const extents = await a.device.extents({ kind: 'allocated' });
        assertWellFormed(extents, { offset: 0, length: volumeSize }, 'allocated extents');
        for (const w of writes) {
          assert.ok(
            extents.some((e) => !e.zero && e.offset <= w.offset && w.offset + w.length <= e.offset + e.length),
            `written range ${JSON.stringify(w)} is not inside one data extent: ${JSON.stringify(extents)}`,
          );
        }
        let pos = 0;
        for (const e of [...extents, { offset: volumeSize, length: 0 }]) {
          if (e.offset > pos) {
            const gap = await a.device.read(pos, e.offset - pos);
            assert.ok(gap.every((b) => b === 0), `unallocated range [${pos}, ${e.offset}) holds data`);
          }
          pos = Math.max(pos, e.offset + e.length);
        }
        await driver.detach(a.id);
      },
    },
    {
      name: 'extents(allocated, range) stays inside the range, and a range outside the device fails with INVALID_INPUT',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await a.device.write(0, patternBytes(volumeSize, 5));
        const range = { offset: 65536, length: 131072 };
        const extents = await a.device.extents({ kind: 'allocated' }, range);
        assert.ok(extents.length > 0, 'a fully written range reports data');
        assertWellFormed(extents, range, 'allocated extents of a range');
        await rejectsWithCode(a.device.extents({ kind: 'allocated' }, { offset: volumeSize - 512, length: 1024 }), 'INVALID_INPUT', 'extents past end', driver.name);
        await driver.detach(a.id);
      },
    },
    {
      name: 'extents with an unknown query, or changed without a checkpoint id, fails with INVALID_INPUT (never NOT_FOUND, which would send the caller to a full read)',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        await rejectsWithCode(a.device.extents({ kind: 'dirty' } as never), 'INVALID_INPUT', 'extents(dirty)', driver.name);
        await rejectsWithCode(a.device.extents({ kind: 'changed' } as never), 'INVALID_INPUT', 'extents(changed) without since', driver.name);
        await rejectsWithCode(a.device.extents({ kind: 'changed', since: '' }), 'INVALID_INPUT', "extents(changed, since '')", driver.name);
        await driver.detach(a.id);
      },
    },
    ...allocatedExtentEdgeCases,
    zeroFlaggedExtents,
  ],
};

/** Runs when the driver declares `changedBlockTracking`. */
export const changedExtents: Group<VolumeDriverContext> = {
  name: 'changed-block tracking',
  cases: [
    {
      name: 'extents(changed since checkpoint) is exact and complete: every write after it, nothing before it',
      async run({ driver, volumeSize }) {
        const cbt = driver.changedBlockTracking!;
        assert.ok(cbt, 'changedBlockTracking must be present when declared');
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await a.device.write(0, patternBytes(volumeSize, 9)); // before the checkpoint: must not show
        await a.device.flush();
        const cp = await cbt.createCheckpoint(v.id);
        assert.equal(cp.volumeId, v.id);
        const writes = scattered(volumeSize);
        for (const [i, w] of writes.entries()) await a.device.write(w.offset, patternBytes(w.length, 200 + i));
        const zeroed = { offset: volumeSize / 4, length: 8192 };
        await a.device.writeZeroes(zeroed.offset, zeroed.length);
        await a.device.flush();
        const changed = await a.device.extents({ kind: 'changed', since: cp.id });
        assertExactWithin(changed, [...writes, zeroed], a.device.extentGranularity, volumeSize, 'changed extents');
        await driver.detach(a.id);
        await cbt.deleteCheckpoint(v.id, cp.id);
      },
    },
    {
      name: 'extents(changed) answers for the checkpoint asked: since an older one it has the writes before a newer one, since the newer one only those after it',
      async run({ driver, volumeSize }) {
        // Each backup asks since its parent's checkpoint: a driver answering for another one (the
        // newest, the oldest) makes an incremental miss writes or carry others.
        const cbt = driver.changedBlockTracking!;
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const older = await cbt.createCheckpoint(v.id);
        const first = { offset: 1_048_576, length: 65536 };
        await a.device.write(first.offset, patternBytes(first.length, 65));
        await a.device.flush();
        const newer = await cbt.createCheckpoint(v.id);
        const second = { offset: volumeSize - 3 * 65536, length: 65536 };
        await a.device.write(second.offset, patternBytes(second.length, 66));
        await a.device.flush();
        const newest = await cbt.createCheckpoint(v.id);
        const unit = a.device.extentGranularity;
        assertExactWithin(await a.device.extents({ kind: 'changed', since: older.id }), [first, second], unit, volumeSize, 'changed since the older checkpoint');
        assertExactWithin(await a.device.extents({ kind: 'changed', since: newer.id }), [second], unit, volumeSize, 'changed since the newer checkpoint');
        assert.deepEqual(await a.device.extents({ kind: 'changed', since: newest.id }), [], 'changed since the newest checkpoint');
        await driver.detach(a.id);
        for (const cp of [older, newer, newest]) await cbt.deleteCheckpoint(v.id, cp.id);
      },
    },
    {
      name: 'after extendVolume, extents(changed) since an older checkpoint reports every write made since it, in the old part and the new tail, or fails with NOT_FOUND',
      async run({ driver, volumeSize }) {
        // A backup of a grown volume asks since the checkpoint of a backup taken before it grew.
        // Either answer is safe (NOT_FOUND: the backup reads everything); an answer that misses
        // the writes of the new tail, or those made around the extend, loses them.
        const cbt = driver.changedBlockTracking!;
        const v = await driver.createVolume({ size: volumeSize });
        const cp = await cbt.createCheckpoint(v.id);
        let a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const before = { offset: 65536, length: 4096 };
        await a.device.write(before.offset, patternBytes(before.length, 71));
        await a.device.flush();
        await driver.detach(a.id);
        const grown = await driver.extendVolume(v.id, volumeSize * 2);
        assert.equal(grown.size, volumeSize * 2);
        a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const writes = [before, { offset: volumeSize / 2, length: 8192 }, { offset: volumeSize + 131072, length: 65536 }, { offset: 2 * volumeSize - 4096, length: 4096 }];
        for (const [i, w] of writes.slice(1).entries()) await a.device.write(w.offset, patternBytes(w.length, 72 + i));
        await a.device.flush();
        const changed = await a.device.extents({ kind: 'changed', since: cp.id }).catch((err: { code?: string }) => {
          if (err?.code === 'NOT_FOUND') return undefined;
          throw err;
        });
        if (changed) {
          assertWellFormed(changed, { offset: 0, length: 2 * volumeSize }, 'changed extents after the extend');
          const covered = (offset: number) => changed.some((e) => e.offset <= offset && offset < e.offset + e.length);
          for (const w of writes) {
            for (const probe of [w.offset, w.offset + w.length - 1]) {
              assert.ok(covered(probe), `changed extents after the extend: written byte ${probe} is not reported (extents ${JSON.stringify(changed)})`);
            }
          }
        }
        await driver.detach(a.id);
        await cbt.deleteCheckpoint(v.id, cp.id).catch(() => {});
      },
    },
    {
      name: 'changes made through attachments since detached are reported to a later attachment, accumulated across sessions',
      async run({ driver, volumeSize }) {
        // The flow's order: the checkpoint is taken with nothing attached, the volume's user writes
        // in sessions of its own (attach, write, detach), and the next backup asks a new read-only
        // attachment. Changes a driver kept only in an attachment would be lost at detach, and the
        // next incremental would silently miss them.
        const cbt = driver.changedBlockTracking!;
        const v = await driver.createVolume({ size: volumeSize });
        const cp = await cbt.createCheckpoint(v.id);
        const writes = scattered(volumeSize);
        for (const [i, w] of writes.entries()) {
          const s = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
          await s.device.write(w.offset, patternBytes(w.length, 300 + i));
          await s.device.flush();
          await driver.detach(s.id);
        }
        const zeroed = { offset: volumeSize / 4, length: 8192 };
        const z = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await z.device.writeZeroes(zeroed.offset, zeroed.length);
        await z.device.flush();
        await driver.detach(z.id);
        const r = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        const changed = await r.device.extents({ kind: 'changed', since: cp.id });
        assertExactWithin(changed, [...writes, zeroed], r.device.extentGranularity, volumeSize, 'changed extents after the writers detached');
        await driver.detach(r.id);
        await cbt.deleteCheckpoint(v.id, cp.id);
      },
    },
    {
      name: 'checkpoints are listed oldest first; extents since an unknown or deleted checkpoint fail with NOT_FOUND',
      async run({ driver, volumeSize }) {
        const cbt = driver.changedBlockTracking!;
        const v = await driver.createVolume({ size: volumeSize });
        const c1 = await cbt.createCheckpoint(v.id);
        const c2 = await cbt.createCheckpoint(v.id);
        assert.deepEqual((await cbt.listCheckpoints(v.id)).map((c) => c.id), [c1.id, c2.id]);
        await cbt.deleteCheckpoint(v.id, c1.id);
        await cbt.deleteCheckpoint(v.id, c1.id); // idempotent
        assert.deepEqual((await cbt.listCheckpoints(v.id)).map((c) => c.id), [c2.id]);
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        await rejectsWithCode(a.device.extents({ kind: 'changed', since: c1.id }), 'NOT_FOUND', 'extents since deleted checkpoint', driver.name);
        await rejectsWithCode(a.device.extents({ kind: 'changed', since: 'no-such-checkpoint' }), 'NOT_FOUND', 'extents since unknown checkpoint', driver.name);
        assert.deepEqual(await a.device.extents({ kind: 'changed', since: c2.id }), [], 'nothing written since c2');
        await driver.detach(a.id);
        await rejectsWithCode(cbt.createCheckpoint('00000000-0000-4000-8000-000000000003'), 'NOT_FOUND', 'createCheckpoint(unknown volume)', driver.name);
      },
    },
    ...changedExtentEdgeCases,
  ],
};

/** Runs when the driver declares both `changedBlockTracking` and `snapshots`. */
export const changedExtentsOfSnapshots: Group<VolumeDriverContext> = {
  name: 'changed-block tracking of snapshots',
  cases: [
    {
      name: 'a snapshot taken after a checkpoint reports the changes up to the snapshot',
      async run({ driver, volumeSize }) {
        const cbt = driver.changedBlockTracking!;
        const v = await driver.createVolume({ size: volumeSize });
        const cp = await cbt.createCheckpoint(v.id);
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const first = { offset: 1_048_576, length: 65536 };
        await a.device.write(first.offset, patternBytes(first.length, 1));
        await a.device.flush();
        const snap = await driver.createSnapshot(v.id);
        const s = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
        const changed = await s.device.extents({ kind: 'changed', since: cp.id });
        assertExactWithin(changed, [first], s.device.extentGranularity, volumeSize, 'snapshot changed extents');
        await driver.detach(s.id);
        await driver.detach(a.id);
        await driver.deleteSnapshot(snap.id);
      },
    },
  ],
};

/**
 * Checkpoints and snapshots taken while the volume is written (the flow takes both while its user
 * keeps writing), asked on the writer's own attachment: for drivers whose attachments see
 * checkpoints created after they attached (not, for example, an NBD connection, whose contexts are
 * fixed when it connects).
 */
export const changedExtentsWhileWriting: Group<VolumeDriverContext> = {
  name: 'changed-block tracking while writing',
  cases: [
    {
      name: 'writes in flight across createCheckpoint and createSnapshot: no write is missed by the older checkpoint, the new one or the snapshot',
      async run({ driver, volumeSize }) {
        // The flow takes its checkpoint and snapshot while the volume's user keeps writing. Whatever
        // the interleaving: "changed since" the older checkpoint covers every write; "changed since"
        // the new one covers every write begun after createCheckpoint returned; and every granule
        // holding data in the snapshot is in the snapshot's changes since the older checkpoint (the
        // volume was all zeros at it). A miss here is a silently incomplete incremental backup.
        const cbt = driver.changedBlockTracking!;
        const v = await driver.createVolume({ size: volumeSize });
        const older = await cbt.createCheckpoint(v.id);
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const unit = a.device.extentGranularity;
        const granules = Math.floor(volumeSize / unit);
        let clock = 0;
        let next = 0;
        let stopAt = Infinity;
        const writes: { granule: number; begun: number }[] = [];
        const writer = async (): Promise<void> => {
          while (clock < stopAt) {
            const granule = next++ % granules;
            const begun = ++clock;
            await a.device.write(granule * unit, patternBytes(Math.min(4096, unit), 1 + granule));
            writes.push({ granule, begun });
            await new Promise((r) => setImmediate(r)); // a driver whose writes never wait must not starve the calls below
          }
        };
        const writers = Array.from({ length: 4 }, writer);
        while (writes.length < 8) await new Promise((r) => setImmediate(r));
        const checkpoint = await cbt.createCheckpoint(v.id);
        const afterCheckpoint = ++clock;
        const snap = await driver.createSnapshot(v.id);
        stopAt = clock + 16; // a few more writes after the snapshot
        await Promise.all(writers);

        // Asked on the writer's own attachment: what survives a detach is another case's concern.
        const covered = (extents: Extent[], granule: number) => extents.some((e) => e.offset <= granule * unit && granule * unit < e.offset + e.length);
        const sinceOlder = await a.device.extents({ kind: 'changed', since: older.id });
        const sinceNew = await a.device.extents({ kind: 'changed', since: checkpoint.id });
        for (const w of writes) {
          assert.ok(covered(sinceOlder, w.granule), `a write to granule ${w.granule} is missing from the changes since the older checkpoint`);
          if (w.begun > afterCheckpoint) assert.ok(covered(sinceNew, w.granule), `a write to granule ${w.granule} begun after createCheckpoint returned is missing from its changes`);
        }
        assert.ok(writes.some((w) => w.begun > afterCheckpoint), 'some writes began after the checkpoint');
        const s = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
        const snapChanged = await s.device.extents({ kind: 'changed', since: older.id });
        for (let g = 0; g < granules; g++) {
          const held = await s.device.read(g * unit, Math.min(4096, unit));
          if (held.some((b) => b !== 0)) assert.ok(covered(snapChanged, g), `granule ${g} holds data in the snapshot but is not in its changes since the older checkpoint`);
        }
        await driver.detach(s.id);
        await driver.detach(a.id);
        await driver.deleteSnapshot(snap.id);
      },
    },
  ],
};

/** Runs when the driver does not declare `changedBlockTracking`. */
export const changedExtentsRefusals: Group<VolumeDriverContext> = {
  name: 'changed-block tracking (not supported)',
  cases: [
    {
      name: 'extents(changed) fails with NOT_SUPPORTED and no tracking interface is exposed',
      async run({ driver, volumeSize }) {
        assert.equal(driver.changedBlockTracking, undefined);
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        await rejectsWithCode(a.device.extents({ kind: 'changed', since: 'any' }), 'NOT_SUPPORTED', 'extents(changed)', driver.name);
        await driver.detach(a.id);
      },
    },
  ],
};
