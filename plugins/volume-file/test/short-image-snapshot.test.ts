import assert from 'node:assert/strict';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * Contract: an extendVolume interrupted between its sidecar update and the image's growth leaves
 * an image shorter than its sidecar; that is healed, not corrupt. A snapshot taken in that state
 * has the sidecar's size, and the missing tail reads as zeros.
 */
describe('FileVolumeDriver snapshot of an image left short by an interrupted extend', () => {
  const t = driverPerTest();

  it('has the sidecar size and attaches', async () => {
    const v = await t.driver.createVolume({ size: MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(4096, 3));
    await t.driver.detach(a.id);
    await t.driver.extendVolume(v.id, 2 * MiB);
    await truncate(join(t.dir, 'volumes', `${v.id}.img`), MiB); // what a crash before the image grew leaves
    const s = await t.driver.createSnapshot(v.id, 's');
    assert.equal(s.size, 2 * MiB);
    const r = await t.driver.attach({ kind: 'snapshot', id: s.id }, 'ro');
    assert.ok((await r.device.read(0, 4096)).equals(Buffer.alloc(4096, 3)));
    assert.ok((await r.device.read(MiB, MiB)).equals(Buffer.alloc(MiB)), 'the tail reads as zeros');
    await t.driver.detach(r.id);
  });
});
