import assert from 'node:assert/strict';
import { open, readFile, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'vitest';
import { stampOf, type Extent } from '@cairn/core';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Extents(changed) from a fresh driver instance, or 'NOT_FOUND'. */
async function changed(directory: string, volumeId: string, cp: string): Promise<Extent[] | 'NOT_FOUND'> {
  const d = new FileVolumeDriver({ directory });
  try {
    return await d.changedBlockTracking.changedSince('volume', volumeId, cp);
  } catch (err) {
    if ((err as { code?: string }).code === 'NOT_FOUND') return 'NOT_FOUND';
    throw err;
  }
}

const covers = (extents: Extent[], offset: number) => extents.some((e) => e.offset <= offset && offset < e.offset + e.length);

/** Writes `data` at `offset` of the image file itself, as a VM or `dd` would, bypassing the driver. */
async function writeBehindTheDriver(image: string, offset: number, data: Buffer): Promise<void> {
  await sleep(30); // past the file system's timestamp tick (a few ms), as any later writer is
  const fh = await open(image, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

describe('FileVolumeDriver: writes to the image made outside the driver', () => {
  const t = driverPerTest();

  const image = (id: string) => join(t.dir, 'volumes', `${id}.img`);

  it('a write to the image file while detached makes the checkpoints inconsistent instead of under-reporting', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(4 * KiB, 1));
    await t.driver.detach(a.id);
    assert.deepEqual(await changed(t.dir, v.id, cp.id), [{ offset: 0, length: 64 * KiB }], 'tracked through the driver');

    await writeBehindTheDriver(image(v.id), 2 * MiB, Buffer.alloc(4 * KiB, 2));
    const seen = await changed(t.dir, v.id, cp.id);
    assert.ok(seen === 'NOT_FOUND' || covers(seen, 2 * MiB), `the write at 2 MiB is reported or the checkpoint refused, got ${JSON.stringify(seen)}`);

    // Attach (which recovers) persists the verdict; a checkpoint made afterwards tracks again.
    const b = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await t.driver.detach(b.id);
    assert.equal(await changed(t.dir, v.id, cp.id), 'NOT_FOUND');
    const cp2 = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const c = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await c.device.write(MiB, Buffer.alloc(4 * KiB, 3));
    await t.driver.detach(c.id);
    assert.deepEqual(await changed(t.dir, v.id, cp2.id), [{ offset: MiB, length: 64 * KiB }]);
  });

  it('a write behind the driver is caught by createSnapshot: the snapshot does not carry the checkpoint as consistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await writeBehindTheDriver(image(v.id), 3 * MiB, Buffer.alloc(4 * KiB, 2));
    const s = await t.driver.createSnapshot(v.id);
    const a = await t.driver.attach({ kind: 'snapshot', id: s.id }, 'ro');
    try {
      const seen = await a.device.extents({ kind: 'changed', since: cp.id }).catch((err: { code?: string }) => {
        if (err.code === 'NOT_FOUND') return 'NOT_FOUND' as const;
        throw err;
      });
      assert.ok(seen === 'NOT_FOUND' || covers(seen, 3 * MiB), `got ${JSON.stringify(seen)}`);
    } finally {
      await t.driver.detach(a.id);
    }
  });

  it('a write behind the driver that puts the timestamps back is still seen (ctime)', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const { stat } = await import('node:fs/promises');
    const before = await stat(image(v.id));
    await writeBehindTheDriver(image(v.id), 0, Buffer.alloc(4 * KiB, 2));
    await utimes(image(v.id), before.atime, before.mtime);
    const seen = await changed(t.dir, v.id, cp.id);
    assert.ok(seen === 'NOT_FOUND' || covers(seen, 0), `got ${JSON.stringify(seen)}`);
  });

  it('what the driver itself does between checkpoint and query (extend, snapshot, ro attach) keeps the checkpoint consistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await sleep(30);
    await t.driver.extendVolume(v.id, 4 * MiB + 100 * KiB);
    await t.driver.createSnapshot(v.id);
    const ro = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await t.driver.detach(ro.id);
    assert.deepEqual(await changed(t.dir, v.id, cp.id), [{ offset: 4 * MiB, length: 100 * KiB }]);
  });

  it('an extend interrupted before its truncate, healed by the next attach, keeps the checkpoint consistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await t.driver.extendVolume(v.id, 5 * MiB);
    // The crash state: sidecar and bitmaps at 5 MiB, the image still 4 MiB, the stamp that of the 4 MiB image.
    await truncate(image(v.id), 4 * MiB);
    const sidecar = join(t.dir, 'volumes', `${v.id}.json`);
    await writeFile(sidecar, JSON.stringify({ ...JSON.parse(await readFile(sidecar, 'utf8')), imageStamp: await stampOf(image(v.id)) }));
    await sleep(30);
    const ro = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.equal(ro.device.size, 5 * MiB);
    await t.driver.detach(ro.id);
    assert.deepEqual(await changed(t.dir, v.id, cp.id), [{ offset: 4 * MiB, length: MiB }]);
  });
});
