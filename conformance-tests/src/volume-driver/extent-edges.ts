/**
 * Extents at their edges, each a way an incremental backup silently misses data: the last,
 * partial granule of a volume whose size is no multiple of the granularity; a checkpoint asked
 * of another volume's device; a checkpoint deleted next to others that are still in use.
 */
import assert from 'node:assert/strict';
import type { Extent } from '@cairn/core';
import type { Case } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { VolumeDriverContext } from './context.js';

const covers = (extents: Extent[], offset: number, data = false): boolean =>
  extents.some((e) => e.offset <= offset && offset < e.offset + e.length && (!data || !e.zero));

const unknownVolume = '00000000-0000-4000-8000-000000000004';

/** Added to the allocated-extents group (extents.ts); checks the changed extents too with changedBlockTracking. */
const unalignedEnd: Case<VolumeDriverContext> = {
  name: 'a volume whose size is no multiple of the extent granularity: its last bytes round-trip and extents report them',
  async run({ driver, volumeSize }) {
    // 3 sectors past a whole MiB: no granule (a power of two ≥ 1024) ends at the volume's end.
    const size = volumeSize + 1536;
    const v = await driver.createVolume({ size });
    const cp = driver.changedBlockTracking && (await driver.getVolume(v.id)).capabilities?.changedBlockTracking !== false ? await driver.changedBlockTracking.createCheckpoint(v.id) : undefined;
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    try {
      assert.equal(a.device.size, size, 'device size');
      const tail = patternBytes(1024, 81);
      await a.device.write(size - tail.length, tail);
      await a.device.flush();
      assertSameBytes(await a.device.read(size - 4096, 4096), Buffer.concat([Buffer.alloc(4096 - tail.length), tail]), 'the last 4 KiB');
      const allocated = await a.device.extents({ kind: 'allocated' });
      for (const at of [size - tail.length, size - 1]) assert.ok(covers(allocated, at, true), `allocated extents miss written byte ${at} of ${size} (extents ${JSON.stringify(allocated)})`);
      assert.ok(allocated.every((e) => e.offset + e.length <= size), `allocated extents end past ${size}: ${JSON.stringify(allocated)}`);
      if (cp) {
        const changed = await a.device.extents({ kind: 'changed', since: cp.id });
        for (const at of [size - tail.length, size - 1]) assert.ok(covers(changed, at), `changed extents miss written byte ${at} of ${size} (extents ${JSON.stringify(changed)})`);
        assert.ok(changed.every((e) => e.offset + e.length <= size), `changed extents end past ${size}: ${JSON.stringify(changed)}`);
      }
    } finally {
      await driver.detach(a.id);
    }
    const r = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assertSameBytes(await r.device.read(size - 1024, 1024), patternBytes(1024, 81), 'the last KiB after detach');
    await driver.detach(r.id);
    if (cp) await driver.changedBlockTracking!.deleteCheckpoint(v.id, cp.id);
  },
};

const checkpointOfItsVolume: Case<VolumeDriverContext> = {
  name: "a checkpoint belongs to its volume: extents since another volume's checkpoint fail with NOT_FOUND, and deleteCheckpoint naming the other volume leaves it",
  async run({ driver, volumeSize }) {
    // A driver keeping one table of checkpoints for all volumes answers for whichever checkpoint
    // it finds: "nothing changed" since the other volume's, and the backup misses every write.
    const cbt = driver.changedBlockTracking!;
    const a = await driver.createVolume({ size: volumeSize });
    const b = await driver.createVolume({ size: volumeSize });
    const cpA = await cbt.createCheckpoint(a.id);
    const cpB = await cbt.createCheckpoint(b.id);
    const w = await driver.attach({ kind: 'volume', id: a.id }, 'rw');
    await w.device.write(65536, patternBytes(65536, 82));
    await w.device.flush();
    await rejectsWithCode(w.device.extents({ kind: 'changed', since: cpB.id }), 'NOT_FOUND', "extents of volume A since volume B's checkpoint", driver.name);
    assert.ok(covers(await w.device.extents({ kind: 'changed', since: cpA.id }), 65536), "the write is reported since A's own checkpoint");
    await driver.detach(w.id);
    await cbt.deleteCheckpoint(a.id, cpB.id); // an unknown checkpoint of a known volume: no error
    assert.deepEqual((await cbt.listCheckpoints(b.id)).map((c) => c.id), [cpB.id], "B's checkpoint after a delete naming volume A");
    assert.deepEqual((await cbt.listCheckpoints(a.id)).map((c) => c.id), [cpA.id], "A's checkpoints");
    for (const [v, cp] of [[a, cpA], [b, cpB]] as const) await cbt.deleteCheckpoint(v.id, cp.id);
  },
};

const deleteKeepsOthers: Case<VolumeDriverContext> = {
  name: 'deleting a checkpoint keeps the changes of the others: since an older one they still include the writes before and after the deleted one',
  async run({ driver, volumeSize }) {
    // The flow deletes a backup's checkpoint once a newer backup has its own; the older
    // checkpoints of other chains stay in use. A driver that resets shared tracking at the
    // delete (or drops the deleted checkpoint's span of writes) loses those writes for them.
    const cbt = driver.changedBlockTracking!;
    const v = await driver.createVolume({ size: volumeSize });
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const older = await cbt.createCheckpoint(v.id);
    const first = { offset: 1_048_576, length: 65536 };
    await a.device.write(first.offset, patternBytes(first.length, 83));
    await a.device.flush();
    const middle = await cbt.createCheckpoint(v.id);
    const second = { offset: volumeSize - 2 * 65536, length: 65536 };
    await a.device.write(second.offset, patternBytes(second.length, 84));
    await a.device.flush();
    const newer = await cbt.createCheckpoint(v.id);
    await cbt.deleteCheckpoint(v.id, middle.id);
    const third = { offset: 3 * 65536, length: 4096 };
    await a.device.write(third.offset, patternBytes(third.length, 85));
    await a.device.flush();
    // Asked on the writer's own attachment: what survives a detach is another case's concern.
    const sinceOlder = await a.device.extents({ kind: 'changed', since: older.id });
    for (const w of [first, second, third]) {
      for (const at of [w.offset, w.offset + w.length - 1]) assert.ok(covers(sinceOlder, at), `changed since the older checkpoint, after the middle one was deleted: written byte ${at} is missing (extents ${JSON.stringify(sinceOlder)})`);
    }
    const sinceNewer = await a.device.extents({ kind: 'changed', since: newer.id });
    assert.ok(covers(sinceNewer, third.offset), `changed since the newer checkpoint: the write after the delete is missing (extents ${JSON.stringify(sinceNewer)})`);
    assert.ok(!covers(sinceNewer, first.offset), 'changed since the newer checkpoint: a write before it is reported');
    await rejectsWithCode(a.device.extents({ kind: 'changed', since: middle.id }), 'NOT_FOUND', 'extents since the deleted checkpoint', driver.name);
    await driver.detach(a.id);
    for (const cp of [older, newer]) await cbt.deleteCheckpoint(v.id, cp.id);
  },
};

const listCheckpointsUnknown: Case<VolumeDriverContext> = {
  name: 'listCheckpoints of an unknown or deleted volume fails with NOT_FOUND',
  async run({ driver, volumeSize }) {
    // An empty list would tell the flow "no checkpoint to prune" for a volume id that is wrong.
    const cbt = driver.changedBlockTracking!;
    await rejectsWithCode(cbt.listCheckpoints(unknownVolume), 'NOT_FOUND', 'listCheckpoints(unknown volume)', driver.name);
    const v = await driver.createVolume({ size: volumeSize });
    await driver.deleteVolume(v.id);
    await rejectsWithCode(cbt.listCheckpoints(v.id), 'NOT_FOUND', 'listCheckpoints(deleted volume)', driver.name);
  },
};

/** Added to the allocated-extents group. */
export const allocatedExtentEdgeCases: Case<VolumeDriverContext>[] = [unalignedEnd];
/** Added to the changed-block tracking group. */
export const changedExtentEdgeCases: Case<VolumeDriverContext>[] = [checkpointOfItsVolume, deleteKeepsOthers, listCheckpointsUnknown];
