import assert from 'node:assert/strict';
import { open, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { fileSystemClock, settledStampOf, type Extent, type ImageStamp, type StampClock } from '@cairn/core';
import { FileVolumeDriver } from '../src/index.js';
import { CoarseClock } from './coarse-clock.js';
import { driverPerTest, useClock } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

type Ctx = {
  recovered: (volumeId: string) => Promise<unknown>;
  store: { guarded: <T>(fn: () => Promise<T>) => Promise<T> };
};
const ctxOf = (d: FileVolumeDriver) => (d as unknown as { ctx: Ctx }).ctx;

/** changedSince from a fresh driver instance (reading stamps with `clock`), or 'NOT_FOUND'. */
async function changed(directory: string, kind: 'volume' | 'snapshot', id: string, cp: string, clock: StampClock = fileSystemClock): Promise<Extent[] | 'NOT_FOUND'> {
  try {
    const d = new FileVolumeDriver({ directory });
    useClock(d, clock);
    return await d.changedBlockTracking.changedSince(kind, id, cp);
  } catch (err) {
    if ((err as { code?: string }).code === 'NOT_FOUND') return 'NOT_FOUND';
    throw err;
  }
}

const covers = (extents: Extent[], offset: number) => extents.some((e) => e.offset <= offset && offset < e.offset + e.length);

/** The real clock, running `hook` once, at the first clock reading of a settle (settledStampOf's first `now`). */
function clockWithSettleHook(hook: () => Promise<void>): StampClock & { fired: boolean } {
  const clock = {
    fired: false,
    stat: (path: string) => fileSystemClock.stat(path),
    now: async (dir: string) => {
      if (!clock.fired) {
        clock.fired = true;
        await hook();
      }
      return fileSystemClock.now(dir);
    },
    pause: (attempt: number) => fileSystemClock.pause(attempt),
    touch: (path: string) => fileSystemClock.touch(path),
  };
  return clock;
}

/**
 * Contract: the driver's own growth of an image (an attach healing an interrupted extend, under a
 * shared image lock) made by another process or driver instance is never taken for a write from
 * outside the driver: no needless full backup. The other instance acts from a hook at the step in
 * between, so the tests depend on no timing.
 */
describe('FileVolumeDriver: another instance healing an interrupted extend', () => {
  const t = driverPerTest();
  const image = (kind: 'volumes' | 'snapshots', id: string) => join(t.dir, kind, `${id}.img`);
  const consistency = async (id: string) =>
    (JSON.parse(await readFile(join(t.dir, 'volumes', `${id}.json`), 'utf8')) as { checkpoints: { consistent: boolean }[] }).checkpoints.map((c) => c.consistent);

  /** A volume of 4 MiB with a checkpoint, left as an extend to 5 MiB killed before its truncate (stamp read with `clock`). */
  async function interruptedExtend(clock: StampClock = fileSystemClock): Promise<{ id: string; cp: string }> {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await t.driver.extendVolume(v.id, 5 * MiB);
    await truncate(image('volumes', v.id), 4 * MiB);
    const sidecar = join(t.dir, 'volumes', `${v.id}.json`);
    const stamp: ImageStamp = await settledStampOf(image('volumes', v.id), clock);
    await writeFile(sidecar, JSON.stringify({ ...JSON.parse(await readFile(sidecar, 'utf8')), imageStamp: stamp }));
    return { id: v.id, cp: cp.id };
  }

  it('heals first while the other, having found the image short, has not yet taken the metadata lock: neither sees an outside write', async () => {
    const v = await interruptedExtend();
    const d1 = new FileVolumeDriver({ directory: t.dir });
    const d2 = new FileVolumeDriver({ directory: t.dir });
    const ctx2 = ctxOf(d2);
    const recovered = ctx2.recovered.bind(ctx2);
    const guarded = ctx2.store.guarded.bind(ctx2.store);
    let armed = false;
    let healedBy1 = false;
    ctx2.recovered = async (id) => {
      const r = await recovered(id);
      armed = true; // d2 checks the image's size next
      return r;
    };
    ctx2.store.guarded = async (fn) => {
      if (armed && !healedBy1) {
        healedBy1 = true;
        const a1 = await d1.attach({ kind: 'volume', id: v.id }, 'ro');
        assert.equal(a1.device.size, 5 * MiB);
        await d1.detach(a1.id);
      }
      return guarded(fn);
    };
    const a2 = await d2.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.ok(healedBy1, 'd1 attached between d2\'s size check and its metadata lock');
    assert.equal(a2.device.size, 5 * MiB);
    await d2.detach(a2.id);
    assert.equal((await stat(image('volumes', v.id))).size, 5 * MiB);
    assert.deepEqual(await consistency(v.id), [true], 'no outside write: the checkpoint stays consistent');
    assert.deepEqual(await changed(t.dir, 'volume', v.id, v.cp), [{ offset: 4 * MiB, length: MiB }]);
  });

  it('attaches while the other settles the stamp of its heal: the grown image is not taken for an outside write', async () => {
    const v = await interruptedExtend();
    const other = new FileVolumeDriver({ directory: t.dir });
    const clock = clockWithSettleHook(async () => {
      const a = await other.attach({ kind: 'volume', id: v.id }, 'ro');
      await other.detach(a.id);
    });
    useClock(t.driver, clock);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.ok(clock.fired);
    await t.driver.detach(a.id);
    assert.deepEqual(await consistency(v.id), [true]);
    assert.deepEqual(await changed(t.dir, 'volume', v.id, v.cp), [{ offset: 4 * MiB, length: MiB }]);
  });

  it('heals during a snapshot\'s copy in another instance: neither the snapshot\'s checkpoint nor the volume\'s is made inconsistent', async () => {
    const v = await interruptedExtend();
    const healer = new FileVolumeDriver({ directory: t.dir });
    const d = new FileVolumeDriver({ directory: t.dir });
    const ctx = ctxOf(d);
    const recovered = ctx.recovered.bind(ctx);
    let healed = false;
    ctx.recovered = async (id) => {
      const r = await recovered(id);
      if (!healed) {
        healed = true; // between the snapshot's check of the stamp and its copy
        const ro = await healer.attach({ kind: 'volume', id: v.id }, 'ro');
        await healer.detach(ro.id);
      }
      return r;
    };
    const s = await d.createSnapshot(v.id);
    assert.ok(healed);
    assert.equal((await stat(image('snapshots', s.id))).size, 5 * MiB);
    assert.deepEqual(await changed(t.dir, 'snapshot', s.id, v.cp), [{ offset: 4 * MiB, length: MiB }]);
    assert.deepEqual(await changed(t.dir, 'volume', v.id, v.cp), [{ offset: 4 * MiB, length: MiB }]);
  });

  it('an outside write during a snapshot\'s copy, absorbed meanwhile by another instance\'s recovery, still leaves the snapshot\'s checkpoint inconsistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const other = new FileVolumeDriver({ directory: t.dir });
    const d = new FileVolumeDriver({ directory: t.dir });
    const ctx = ctxOf(d);
    const recovered = ctx.recovered.bind(ctx);
    let wrote = false;
    ctx.recovered = async (id) => {
      const r = await recovered(id);
      if (!wrote) {
        wrote = true;
        const fh = await open(image('volumes', v.id), 'r+');
        await fh.write(Buffer.from('OUTSIDE!'), 0, 8, 3 * MiB);
        await fh.close();
        const ro = await other.attach({ kind: 'volume', id: v.id }, 'ro'); // recovers: a new stamp, the checkpoint inconsistent
        await other.detach(ro.id);
      }
      return r;
    };
    const s = await d.createSnapshot(v.id);
    assert.ok(wrote);
    const ofSnapshot = await changed(t.dir, 'snapshot', s.id, cp.id);
    assert.ok(ofSnapshot === 'NOT_FOUND' || covers(ofSnapshot, 3 * MiB), `snapshot: got ${JSON.stringify(ofSnapshot)}`);
    assert.equal(await changed(t.dir, 'volume', v.id, cp.id), 'NOT_FOUND');
  });

  for (const coarse of [false, true]) {
    it(`without an outside write, extend, healing attach and snapshot keep the checkpoint consistent (${coarse ? 'whole-tick' : 'fine'} timestamps)`, async () => {
      const clock = coarse ? new CoarseClock(t.dir) : fileSystemClock;
      if (clock instanceof CoarseClock) await clock.tick();
      useClock(t.driver, clock);
      const v = await interruptedExtend(clock);
      assert.deepEqual(await consistency(v.id), [true], 'after the first extend');
      const d = new FileVolumeDriver({ directory: t.dir });
      useClock(d, clock);
      const ro = await d.attach({ kind: 'volume', id: v.id }, 'ro');
      assert.equal(ro.device.size, 5 * MiB, 'the extend is healed');
      await d.detach(ro.id);
      assert.deepEqual(await consistency(v.id), [true], 'after the heal');
      await t.driver.extendVolume(v.id, 6 * MiB);
      assert.deepEqual(await consistency(v.id), [true], 'after the second extend');
      const s = await d.createSnapshot(v.id);
      assert.deepEqual(await consistency(v.id), [true], 'after the snapshot');
      assert.deepEqual(await changed(t.dir, 'volume', v.id, v.cp, clock), [{ offset: 4 * MiB, length: 2 * MiB }]);
      assert.deepEqual(await changed(t.dir, 'snapshot', s.id, v.cp, clock), [{ offset: 4 * MiB, length: 2 * MiB }]);
    });
  }
});
