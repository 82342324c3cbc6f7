import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { rejectsWithCode } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { childrenPerTest, driverPerTest, untilNotBusy } from './helpers.js';

const MiB = 1024 * 1024;

describe('FileVolumeDriver across processes', () => {
  const t = driverPerTest();
  const children = childrenPerTest();

  it('attach(rw) of a volume another process holds read-write fails with BUSY, and works once it detaches', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const holder = children.holder(t.dir, v.id, 'rw', 0);
    assert.equal(await holder.ready, 'attached');
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) while another process writes');
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'ro'), 'BUSY', 'attach(ro) while another process writes');
    assert.equal((await t.driver.getVolume(v.id)).status, 'in-use', 'status seen from this process');
    await rejectsWithCode(t.driver.deleteVolume(v.id), 'BUSY', 'deleteVolume while another process writes');
    await rejectsWithCode(t.driver.extendVolume(v.id, 8 * MiB), 'BUSY', 'extendVolume while another process writes');
    await rejectsWithCode(t.driver.createSnapshot(v.id), 'BUSY', 'createSnapshot while another process writes');
    await rejectsWithCode(t.driver.changedBlockTracking.createCheckpoint(v.id), 'BUSY', 'createCheckpoint while another process writes');
    assert.equal(await holder.stop(), 0);
    assert.equal((await t.driver.getVolume(v.id)).status, 'available');
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    assert.ok((await a.device.read(0, 4096)).equals(Buffer.alloc(4096, 0x77)), 'the other process wrote through its own driver');
    await t.driver.detach(a.id);
  });

  it('attach(ro) is shared with another process reading, and attach(rw) meanwhile fails with BUSY', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const holder = children.holder(t.dir, v.id, 'ro');
    assert.equal(await holder.ready, 'attached');
    const ro = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) while another process reads');
    await t.driver.detach(ro.id);
    assert.equal(await holder.stop(), 0);
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await t.driver.detach(rw.id);
  });

  it('a process killed while attached read-write releases its lock and leaves its checkpoints inconsistent: extents(changed) fails with NOT_FOUND', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const holder = children.holder(t.dir, v.id, 'rw', MiB);
    assert.equal(await holder.ready, 'attached');
    assert.equal((await t.driver.getVolume(v.id)).status, 'in-use', 'status while the other process writes');
    await holder.kill();
    assert.equal((await t.driver.getVolume(v.id)).status, 'available', 'status once the marked writer is dead');
    const a = await untilNotBusy(() => t.driver.attach({ kind: 'volume', id: v.id }, 'ro'));
    assert.ok((await a.device.read(MiB, 4096)).equals(Buffer.alloc(4096, 0x77)), 'the write itself reached the image');
    await rejectsWithCode(a.device.extents({ kind: 'changed', since: cp.id }), 'NOT_FOUND', 'extents(changed) after a crash');
    assert.deepEqual((await t.driver.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id), [cp.id], 'the checkpoint is still listed');
    await t.driver.detach(a.id);
    // A checkpoint taken after recovery tracks again.
    const cp2 = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await rw.device.write(2 * MiB, Buffer.alloc(512, 1));
    assert.deepEqual(await rw.device.extents({ kind: 'changed', since: cp2.id }), [{ offset: 2 * MiB, length: 65536 }]);
    await t.driver.detach(rw.id);
  });

  it('a cleanly detached writer in another process leaves its changes in the checkpoint', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const holder = children.holder(t.dir, v.id, 'rw', 3 * MiB + 100);
    assert.equal(await holder.ready, 'attached');
    assert.equal(await holder.stop(), 0);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.deepEqual(await a.device.extents({ kind: 'changed', since: cp.id }), [{ offset: 3 * MiB, length: 65536 }]);
    await t.driver.detach(a.id);
  });

  it('deleteVolume meeting a createSnapshot of another instance after it has checked for snapshots: the snapshot fails with BUSY and the volume is deleted, so no snapshot outlives its volume', async () => {
    const other = new FileVolumeDriver({ directory: t.dir });
    const v = await t.driver.createVolume({ size: 4 * MiB });
    // The instant deleteVolume has listed the snapshots (none yet), the other instance snapshots the volume.
    const store = (t.driver as unknown as { ctx: { store: { snapshotListing: () => Promise<unknown> } } }).ctx.store;
    const snapshots = store.snapshotListing.bind(store);
    let snapshot: Promise<string> | undefined;
    store.snapshotListing = async () => {
      const seen = await snapshots();
      snapshot ??= other.createSnapshot(v.id).then(
        () => 'created',
        (e: { code?: string }) => `error ${String(e.code)}`,
      );
      await snapshot;
      return seen;
    };
    await t.driver.deleteVolume(v.id);
    assert.equal(await snapshot, 'error BUSY', 'the snapshot taken meanwhile');
    await rejectsWithCode(other.getVolume(v.id), 'NOT_FOUND', 'the deleted volume');
    assert.deepEqual((await readdir(join(t.dir, 'snapshots'))).filter((n) => n.endsWith('.json')), [], 'no snapshot sidecar is left');
  });

  it('deleteCheckpoint from another instance while this one writes the volume: the writer\'s flush and detach do not write the deleted bitmap back, and the other checkpoints keep tracking', async () => {
    const other = new FileVolumeDriver({ directory: t.dir });
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const gone = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const kept = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await rw.device.write(0, Buffer.alloc(512, 1));
    await other.changedBlockTracking.deleteCheckpoint(v.id, gone.id);
    await rw.device.write(MiB, Buffer.alloc(512, 1));
    await rw.device.flush();
    await t.driver.detach(rw.id);
    assert.deepEqual(await readdir(join(t.dir, 'volumes', `${v.id}.cbt`)), [`${kept.id}.bitmap`], 'only the kept checkpoint has a bitmap file');
    assert.deepEqual((await other.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id), [kept.id]);
    const ro = await other.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.deepEqual(await ro.device.extents({ kind: 'changed', since: kept.id }), [
      { offset: 0, length: 65536 },
      { offset: MiB, length: 65536 },
    ]);
    await other.detach(ro.id);
  });

  // Backup software polls `volume list` all the time; a status probe must never make a real attach fail.
  for (const [how, env] of [
    ['with fs-ext', {}],
    ['with flock(1) helpers (no fs-ext)', { CAIRN_VOLUME_FILE_NO_FS_EXT: '1' }],
  ] as const) {
    it(`another process polling listVolumes ${how} never makes attach(rw) here fail with BUSY, and sees the volume in use`, async () => {
      const v = await t.driver.createVolume({ size: 4 * MiB });
      const poller = children.poller(t.dir, 7, env);
      await poller.polling;
      let seed = 11;
      const rand = (n: number) => {
        seed = (seed * 1103515245 + 12345) >>> 0;
        return Math.floor((seed / 2 ** 32) * n);
      };
      const failures: string[] = [];
      for (let i = 0; i < 150; i++) {
        let a;
        try {
          a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
        } catch (err) {
          failures.push(String((err as { code?: string }).code));
          continue;
        }
        await a.device.write(rand(4 * MiB - 512), Buffer.alloc(512, 1 + rand(255)));
        await t.driver.detach(a.id);
      }
      const report = await poller.stop();
      assert.deepEqual(failures, [], 'attach(rw) failures while another process polls');
      assert.ok(!('error' in report), `the poller failed: ${JSON.stringify(report)}`);
      assert.ok(report.inUse > 0, 'the poller saw the volume in use while attached here');
      assert.equal((await t.driver.getVolume(v.id)).status, 'available');
    });
  }
});
