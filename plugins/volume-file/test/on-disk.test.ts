import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { alignedBuffer } from '@cairn/core';
import { patternBytes, rejectsWithCode } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const allocated = async (path: string) => (await stat(path)).blocks * 512;

describe('FileVolumeDriver on disk', () => {
  const t = driverPerTest();
  const volumeImage = (id: string) => join(t.dir, 'volumes', `${id}.img`);
  const snapshotImage = (id: string) => join(t.dir, 'snapshots', `${id}.img`);


  it('createVolume(1 GiB) makes a sparse image of 1 GiB that allocates no data blocks', async () => {
    const v = await t.driver.createVolume({ size: GiB });
    const s = await stat(volumeImage(v.id));
    assert.equal(s.size, GiB);
    assert.ok(s.blocks * 512 <= 64 * KiB, `a new 1 GiB volume allocates ${s.blocks * 512} bytes`);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.deepEqual(await a.device.extents({ kind: 'allocated' }), []);
    await t.driver.detach(a.id);
  });

  it('createSnapshot copies only the data, and writes after it reach the volume image but not the snapshot image', async () => {
    const v = await t.driver.createVolume({ size: 64 * MiB });
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const before = patternBytes(8 * MiB, 1);
    await rw.device.write(16 * MiB, before);
    const snap = await t.driver.createSnapshot(v.id);
    const after = patternBytes(MiB, 2);
    await rw.device.write(16 * MiB, after);
    await t.driver.detach(rw.id);
    const snapBytes = await allocated(snapshotImage(snap.id));
    assert.ok(snapBytes >= 8 * MiB && snapBytes <= 9 * MiB, `snapshot allocates ${snapBytes} bytes for 8 MiB of data`);
    assert.equal((await stat(snapshotImage(snap.id))).size, 64 * MiB);
    const snapFile = await readFile(snapshotImage(snap.id));
    const volFile = await readFile(volumeImage(v.id));
    assert.ok(snapFile.subarray(16 * MiB, 24 * MiB).equals(before), 'snapshot image keeps the old bytes');
    assert.ok(volFile.subarray(16 * MiB, 17 * MiB).equals(after), 'volume image has the new bytes');
    assert.ok(snapFile.subarray(0, 16 * MiB).every((b) => b === 0), 'holes read as zeros in the copy');
    await t.driver.deleteSnapshot(snap.id);
  });

  it('large aligned writes (the O_DIRECT path) and buffered writes over each other read back exactly, and CBT sees both', async () => {
    const v = await t.driver.createVolume({ size: 32 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const expected = Buffer.alloc(32 * MiB);
    const put = async (offset: number, data: Buffer): Promise<void> => {
      await rw.device.write(offset, data);
      data.copy(expected, offset);
    };
    const direct = alignedBuffer(4 * MiB);
    patternBytes(4 * MiB, 11).copy(direct);
    await put(0, patternBytes(MiB, 12)); // buffered, then overwritten in part by a direct write
    await put(512 * KiB, direct);
    await put(MiB, patternBytes(100 * KiB, 13)); // buffered over the direct write's range
    await put(8 * MiB, direct.subarray(0, 2 * MiB)); // aligned view of aligned memory
    await put(12 * MiB, direct.subarray(0, MiB + 100)); // odd length: buffered
    expect((await rw.device.read(0, 32 * MiB)).equals(expected)).toBe(true);
    const changed = await rw.device.extents({ kind: 'changed', since: cp.id });
    for (const [offset, length] of [[0, 4.5 * MiB], [8 * MiB, 2 * MiB], [12 * MiB, MiB + 100]]) {
      expect(changed.some((e) => e.offset <= offset! && offset! + length! <= e.offset + e.length), `change at ${offset}`).toBe(true);
    }
    await t.driver.detach(rw.id);
    expect((await readFile(volumeImage(v.id))).equals(expected)).toBe(true);
  });

  it('writeZeroes of a large range deallocates it, and the range reads as zeros and drops out of extents(allocated)', async () => {
    const v = await t.driver.createVolume({ size: 32 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const data = patternBytes(16 * MiB, 3);
    await a.device.write(0, data);
    await a.device.flush();
    const full = await allocated(volumeImage(v.id));
    await a.device.writeZeroes(1000, 8 * MiB);
    await a.device.flush();
    const zeroed = await allocated(volumeImage(v.id));
    assert.ok(full - zeroed >= 8 * MiB - 8 * KiB, `writeZeroes(8 MiB) freed only ${full - zeroed} bytes`);
    data.fill(0, 1000, 1000 + 8 * MiB);
    assert.ok((await a.device.read(0, 16 * MiB)).equals(data), 'content after writeZeroes');
    const extents = await a.device.extents({ kind: 'allocated' });
    assert.ok(!extents.some((e) => e.offset < 4 * MiB + 64 * KiB && e.offset + e.length > 4 * MiB), `the middle of the zeroed range is still allocated: ${JSON.stringify(extents)}`);
    await t.driver.detach(a.id);
  });

  it('extendVolume grows the image sparsely and the new tail counts as changed since an older checkpoint', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await t.driver.extendVolume(v.id, 8 * MiB);
    const s = await stat(volumeImage(v.id));
    assert.equal(s.size, 8 * MiB);
    assert.ok(s.blocks * 512 <= 64 * KiB, 'the new tail is a hole');
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.deepEqual(await a.device.extents({ kind: 'changed', since: cp.id }), [{ offset: 4 * MiB, length: 4 * MiB }]);
    await t.driver.detach(a.id);
  });

  it('a snapshot reports changed extents as of the snapshot, not later writes', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await rw.device.write(0, Buffer.alloc(100, 1));
    const snap = await t.driver.createSnapshot(v.id);
    await rw.device.write(2 * MiB, Buffer.alloc(100, 2));
    await t.driver.detach(rw.id);
    const s = await t.driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
    assert.deepEqual(await s.device.extents({ kind: 'changed', since: cp.id }), [{ offset: 0, length: 64 * KiB }]);
    await t.driver.detach(s.id);
    const vol = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.deepEqual(await vol.device.extents({ kind: 'changed', since: cp.id }), [
      { offset: 0, length: 64 * KiB },
      { offset: 2 * MiB, length: 64 * KiB },
    ]);
    await t.driver.detach(vol.id);
    await t.driver.deleteSnapshot(snap.id);
  });

  it('createSnapshot during concurrent writes captures each write whole or not at all, and its bitmap agrees with its bytes', async () => {
    const v = await t.driver.createVolume({ size: 16 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const block = 256 * KiB;
    const writes = Array.from({ length: 64 }, (_, i) => rw.device.write(i * block, Buffer.alloc(block, i + 1)));
    const snapP = t.driver.createSnapshot(v.id);
    await Promise.all(writes);
    const snap = await snapP;
    await t.driver.detach(rw.id);
    const s = await t.driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
    const changed = await s.device.extents({ kind: 'changed', since: cp.id });
    for (let i = 0; i < 64; i++) {
      const got = await s.device.read(i * block, block);
      const whole = got.equals(Buffer.alloc(block, i + 1));
      assert.ok(whole || got.equals(Buffer.alloc(block)), `write ${i} is torn in the snapshot`);
      const reported = changed.some((e) => e.offset <= i * block && i * block < e.offset + e.length);
      if (whole) assert.ok(reported, `write ${i} is in the snapshot but not in its changed extents`);
    }
    await t.driver.detach(s.id);
    await t.driver.deleteSnapshot(snap.id);
  });

  it('deleteVolume of a volume with snapshots fails with BUSY', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const snap = await t.driver.createSnapshot(v.id);
    await rejectsWithCode(t.driver.deleteVolume(v.id), 'BUSY', 'deleteVolume(with snapshot)');
    await t.driver.deleteSnapshot(snap.id);
    await t.driver.deleteVolume(v.id);
    await assert.rejects(stat(volumeImage(v.id)), { code: 'ENOENT' }, 'image removed');
  });
});
