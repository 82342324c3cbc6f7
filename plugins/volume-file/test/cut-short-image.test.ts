import assert from 'node:assert/strict';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { isCairnError } from '@cairn/core';
import { describe, it } from 'vitest';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * Contract: an image cut short by another program while attached (past what attach healed) is
 * damaged, not an internal failure: a read reaching past the file's end fails with `CORRUPT`,
 * naming the volume, the image and where it ends, and reads before that end still work.
 */
describe('FileVolumeDriver read of an image cut short while attached', () => {
  const t = driverPerTest();

  for (const mode of ['ro', 'rw'] as const) {
    it(`a read past the new end is CORRUPT naming the volume and offsets (attached ${mode})`, async () => {
      const v = await t.driver.createVolume({ size: 4 * MiB });
      const w = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
      await w.device.write(0, Buffer.alloc(8192, 5));
      await t.driver.detach(w.id);
      const a = await t.driver.attach({ kind: 'volume', id: v.id }, mode);
      const image = join(t.dir, 'volumes', `${v.id}.img`);
      await truncate(image, MiB + 4096); // another program cuts it while attached
      try {
        const err: unknown = await a.device.read(MiB, 8192).then(
          () => assert.fail('a read past the image\'s end succeeded'),
          (e: unknown) => e,
        );
        assert.ok(isCairnError(err), `not a CairnError: ${String(err)}`);
        assert.equal(err.code, 'CORRUPT');
        assert.match(err.message, new RegExp(`volume ${v.id}`));
        assert.match(err.message, new RegExp(`byte ${MiB + 4096}\\b`));
        assert.deepEqual(err.details, { volumeId: v.id, file: image, fileSize: MiB + 4096, offset: MiB, length: 8192, deviceSize: 4 * MiB });
        assert.ok((await a.device.read(0, 8192)).equals(Buffer.alloc(8192, 5)), 'a read before the end still works');
      } finally {
        await t.driver.detach(a.id);
      }
    });
  }
});
