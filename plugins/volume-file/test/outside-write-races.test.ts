import assert from 'node:assert/strict';
import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { stampOf, type Extent } from '@cairn/core';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

type Ctx = {
  saveBitmap: (kind: string, ...rest: unknown[]) => Promise<void>;
  recovered: (volumeId: string) => Promise<unknown>;
  imageStamp: (volumeId: string) => Promise<unknown>;
};
const ctxOf = (d: FileVolumeDriver) => (d as unknown as { ctx: Ctx }).ctx;

/** Writes `data` at `offset` of the image file itself, as `dd` would, bypassing the driver. */
async function writeOutside(image: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(image, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** changedSince from a fresh driver instance, or 'NOT_FOUND'. */
async function changed(directory: string, kind: 'volume' | 'snapshot', id: string, cp: string): Promise<Extent[] | 'NOT_FOUND'> {
  try {
    return await new FileVolumeDriver({ directory }).changedBlockTracking.changedSince(kind, id, cp);
  } catch (err) {
    if ((err as { code?: string }).code === 'NOT_FOUND') return 'NOT_FOUND';
    throw err;
  }
}

const covers = (extents: Extent[], offset: number) => extents.some((e) => e.offset <= offset && offset < e.offset + e.length);

/**
 * Contract: a write made to a volume's image from outside the driver (`dd`) while the driver is
 * itself changing the image or copying it (extend, the attach that heals an interrupted extend,
 * a snapshot with no local writer) is never absorbed: the checkpoints that could miss it become
 * inconsistent (`NOT_FOUND`), or their extents cover it. The outside write is made from a hook at
 * the step in between, so the test depends on no timing.
 */
describe('FileVolumeDriver: outside writes while the driver changes or copies the image', () => {
  const t = driverPerTest();
  const image = (kind: 'volumes' | 'snapshots', id: string) => join(t.dir, kind, `${id}.img`);

  it('an outside write while extendVolume saves the grown bitmaps makes the checkpoints inconsistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cps = [await t.driver.changedBlockTracking.createCheckpoint(v.id), await t.driver.changedBlockTracking.createCheckpoint(v.id)];
    const ctx = ctxOf(t.driver);
    const save = ctx.saveBitmap.bind(ctx);
    let wrote = 0;
    ctx.saveBitmap = async (kind, ...rest) => {
      if (kind === 'volume' && wrote++ === 0) await writeOutside(image('volumes', v.id), 1000, Buffer.from('OUTSIDE!'));
      return save(kind, ...rest);
    };
    await t.driver.extendVolume(v.id, 4 * MiB + 64 * KiB);
    assert.ok(wrote > 0, 'the outside write was made while the bitmaps were saved');
    for (const cp of cps) {
      const seen = await changed(t.dir, 'volume', v.id, cp.id);
      assert.ok(seen === 'NOT_FOUND' || covers(seen, 1000), `checkpoint ${cp.id}: got ${JSON.stringify(seen)}`);
    }
    // The verdict is in the sidecar, not only in a stamp that no longer matches.
    const sidecar = JSON.parse(await readFile(join(t.dir, 'volumes', `${v.id}.json`), 'utf8')) as { checkpoints: { consistent: boolean }[] };
    assert.deepEqual(sidecar.checkpoints.map((c) => c.consistent), [false, false]);
  });

  it('an outside write after extendVolume grew the image, before its new stamp is taken, makes the checkpoint inconsistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const ctx = ctxOf(t.driver);
    const stamp = ctx.imageStamp.bind(ctx);
    let wrote = false;
    ctx.imageStamp = async (id) => {
      // The extend's first stamp is the new one (nothing to recover before): the image has grown.
      if (!wrote) {
        wrote = true;
        await writeOutside(image('volumes', v.id), 1000, Buffer.from('OUTSIDE!'));
      }
      return stamp(id);
    };
    await t.driver.extendVolume(v.id, 5 * MiB);
    assert.ok(wrote);
    const seen = await changed(t.dir, 'volume', v.id, cp.id);
    assert.ok(seen === 'NOT_FOUND' || covers(seen, 1000), `got ${JSON.stringify(seen)}`);
  });

  it('an outside write between the attach\'s recovery and its healing of an interrupted extend makes the checkpoint inconsistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await t.driver.extendVolume(v.id, 5 * MiB);
    // The crash state: sidecar and bitmaps at 5 MiB, the image still 4 MiB, the stamp that of the 4 MiB image.
    await truncate(image('volumes', v.id), 4 * MiB);
    const sidecar = join(t.dir, 'volumes', `${v.id}.json`);
    await writeFile(sidecar, JSON.stringify({ ...JSON.parse(await readFile(sidecar, 'utf8')), imageStamp: await stampOf(image('volumes', v.id)) }));
    const d = new FileVolumeDriver({ directory: t.dir });
    const ctx = ctxOf(d);
    const recovered = ctx.recovered.bind(ctx);
    let wrote = false;
    ctx.recovered = async (id) => {
      const r = await recovered(id);
      if (!wrote) {
        wrote = true;
        await writeOutside(image('volumes', v.id), 1000, Buffer.from('OUTSIDE!'));
      }
      return r;
    };
    const ro = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.equal(ro.device.size, 5 * MiB, 'the extend is healed');
    await d.detach(ro.id);
    assert.ok(wrote);
    const seen = await changed(t.dir, 'volume', v.id, cp.id);
    assert.ok(seen === 'NOT_FOUND' || covers(seen, 1000), `got ${JSON.stringify(seen)}`);
  });

  it('an outside write after createSnapshot checked the stamp, landing in the copy, leaves neither the snapshot\'s nor the volume\'s checkpoint consistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const ctx = ctxOf(t.driver);
    const recovered = ctx.recovered.bind(ctx);
    let wrote = false;
    ctx.recovered = async (id) => {
      const r = await recovered(id);
      if (!wrote) {
        wrote = true; // between the stamp's check and the copy
        await writeOutside(image('volumes', v.id), 3 * MiB, Buffer.from('OUTSIDE!'));
      }
      return r;
    };
    const s = await t.driver.createSnapshot(v.id);
    assert.ok(wrote);
    const copy = await open(image('snapshots', s.id), 'r');
    try {
      const b = Buffer.alloc(8);
      await copy.read(b, 0, 8, 3 * MiB);
      assert.equal(b.toString(), 'OUTSIDE!', 'the write is in the snapshot');
    } finally {
      await copy.close();
    }
    const ofSnapshot = await changed(t.dir, 'snapshot', s.id, cp.id);
    assert.ok(ofSnapshot === 'NOT_FOUND' || covers(ofSnapshot, 3 * MiB), `snapshot: got ${JSON.stringify(ofSnapshot)}`);
    assert.equal(await changed(t.dir, 'volume', v.id, cp.id), 'NOT_FOUND');
    const sidecar = JSON.parse(await readFile(join(t.dir, 'volumes', `${v.id}.json`), 'utf8')) as { checkpoints: { consistent: boolean }[] };
    assert.deepEqual(sidecar.checkpoints.map((c) => c.consistent), [false], 'the volume is recovered too');
  });

  it('without an outside write, extend, healing attach and snapshot keep the checkpoint consistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await t.driver.extendVolume(v.id, 5 * MiB);
    const s = await t.driver.createSnapshot(v.id);
    assert.deepEqual(await changed(t.dir, 'volume', v.id, cp.id), [{ offset: 4 * MiB, length: MiB }]);
    assert.deepEqual(await changed(t.dir, 'snapshot', s.id, cp.id), [{ offset: 4 * MiB, length: MiB }]);
  });
});
