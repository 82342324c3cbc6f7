import assert from 'node:assert/strict';
import type { Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { VolumeDriverContext } from './context.js';

export const volumeLifecycle: Group<VolumeDriverContext> = {
  name: 'volume lifecycle',
  cases: [
    {
      name: 'createVolume returns an available volume of the requested size, name and metadata, and getVolume and listVolumes show it so',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize, name: 'vol-a', metadata: { tier: 'gold' } });
        assert.equal(v.size, volumeSize);
        assert.equal(v.name, 'vol-a');
        assert.equal(v.status, 'available');
        assert.deepEqual(v.metadata, { tier: 'gold' });
        // What the driver keeps, not only what it answered (drivers without setVolumeMetadata too).
        assert.deepEqual(await driver.getVolume(v.id), v, 'getVolume of the new volume');
        assert.deepEqual((await driver.listVolumes()).find((x) => x.id === v.id), v, 'listVolumes entry of the new volume');
      },
    },
    {
      name: 'createVolume with a size that is not a positive multiple of 512 fails with INVALID_INPUT',
      async run({ driver }) {
        for (const size of [0, -512, 1000, 1.5 * 512, Number.NaN]) {
          await rejectsWithCode(driver.createVolume({ size }), 'INVALID_INPUT', `createVolume(${size})`, driver.name);
        }
        assert.equal((await driver.listVolumes()).length, 0, 'a refused create must leave nothing behind');
      },
    },
    {
      name: 'createVolume with an empty, too long or control-character name fails with INVALID_INPUT',
      async run({ driver, volumeSize }) {
        const bad = ['', 'a'.repeat(256), 'line\nbreak', 'tab\there', 'nul\u0000', 'del\u007f', 'c1\u0085'];
        for (const name of bad) {
          const err = await rejectsWithCode(driver.createVolume({ size: volumeSize, name }), 'INVALID_INPUT', `createVolume(name ${JSON.stringify(name.slice(0, 20))})`, driver.name);
          assert.equal((err as { details?: { field?: unknown } }).details?.field, 'name', 'details.field names the field');
        }
        assert.equal((await driver.listVolumes()).length, 0, 'a refused create must leave nothing behind');
        const longest = '\u{1F600}'.repeat(255); // 255 code points, 510 UTF-16 units
        for (const name of [longest, 'ünïcødé name', 'x']) {
          assert.equal((await driver.createVolume({ size: volumeSize, name })).name, name);
        }
      },
    },
    {
      name: 'listVolumes lists created volumes and deleteVolume removes them',
      async run({ driver, volumeSize }) {
        const a = await driver.createVolume({ size: volumeSize, name: 'a' });
        const b = await driver.createVolume({ size: volumeSize, name: 'b' });
        assert.deepEqual((await driver.listVolumes()).map((v) => v.id).sort(), [a.id, b.id].sort());
        await driver.deleteVolume(a.id);
        assert.deepEqual((await driver.listVolumes()).map((v) => v.id), [b.id]);
        await rejectsWithCode(driver.getVolume(a.id), 'NOT_FOUND', 'getVolume(deleted)', driver.name);
        // A volume created after a delete is zero-filled: none of the deleted one's bytes show.
        if (driver.capabilities.attach) {
          const w = await driver.attach({ kind: 'volume', id: b.id }, 'rw');
          await w.device.write(0, patternBytes(volumeSize, 68));
          await driver.detach(w.id);
          await driver.deleteVolume(b.id);
          const c = await driver.createVolume({ size: volumeSize, name: 'b' });
          const r = await driver.attach({ kind: 'volume', id: c.id }, 'ro');
          assertSameBytes(await r.device.read(0, volumeSize), Buffer.alloc(volumeSize), 'a volume created after a delete');
          await driver.detach(r.id);
        }
      },
    },
    {
      name: 'getVolume, deleteVolume and attach of an unknown id fail with NOT_FOUND',
      async run({ driver }) {
        const unknown = '00000000-0000-4000-8000-000000000000';
        await rejectsWithCode(driver.getVolume(unknown), 'NOT_FOUND', 'getVolume', driver.name);
        await rejectsWithCode(driver.deleteVolume(unknown), 'NOT_FOUND', 'deleteVolume', driver.name);
        await rejectsWithCode(driver.attach({ kind: 'volume', id: unknown }, 'ro'), 'NOT_FOUND', 'attach', driver.name);
      },
    },
    {
      name: 'deleteVolume of a volume attached read-write or read-only fails with BUSY and keeps it, its bytes and the attachment',
      async run({ driver, volumeSize }) {
        // Read-only too: that attachment is a backup reading the volume.
        const v = await driver.createVolume({ size: volumeSize });
        const data = patternBytes(65536, 61);
        for (const mode of ['rw', 'ro'] as const) {
          const a = await driver.attach({ kind: 'volume', id: v.id }, mode);
          if (mode === 'rw') await a.device.write(volumeSize - 65536, data);
          await rejectsWithCode(driver.deleteVolume(v.id), 'BUSY', `deleteVolume(attached ${mode})`, driver.name);
          assertSameBytes(await a.device.read(volumeSize - 65536, 65536), data, `the ${mode} attachment reads the volume after the refused delete`);
          await driver.detach(a.id);
          assert.equal((await driver.getVolume(v.id)).size, volumeSize, `the volume is kept after the refused delete while attached ${mode}`);
        }
        await driver.deleteVolume(v.id);
      },
    },
    {
      name: 'extendVolume grows a volume, keeps its data, reads zeros in the new tail and refuses to shrink',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await a.device.write(volumeSize - 4096, Buffer.alloc(4096, 0x5a));
        await driver.detach(a.id);
        const grown = await driver.extendVolume(v.id, volumeSize * 2);
        assert.equal(grown.size, volumeSize * 2);
        const r = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        assert.equal(r.device.size, volumeSize * 2);
        assert.ok((await r.device.read(volumeSize - 4096, 4096)).equals(Buffer.alloc(4096, 0x5a)), 'old data kept');
        assert.ok((await r.device.read(volumeSize, volumeSize)).equals(Buffer.alloc(volumeSize)), 'new tail reads zeros');
        await driver.detach(r.id);
        await rejectsWithCode(driver.extendVolume(v.id, volumeSize), 'INVALID_INPUT', 'extendVolume(shrink)', driver.name);
      },
    },
    {
      name: 'extendVolume to a size that is no multiple of 512 or no number fails with INVALID_INPUT and changes nothing; of an unknown volume, NOT_FOUND',
      async run({ driver, volumeSize }) {
        // createVolume's size rule holds for the new size too: a device of an unaligned (or NaN)
        // size is one no backup or restore can cover in whole sectors.
        const v = await driver.createVolume({ size: volumeSize });
        for (const size of [volumeSize * 2 + 100, volumeSize + 1.5, Number.NaN, Number.POSITIVE_INFINITY, String(volumeSize * 2) as never]) {
          await rejectsWithCode(driver.extendVolume(v.id, size), 'INVALID_INPUT', `extendVolume(${String(size)})`, driver.name);
        }
        assert.equal((await driver.getVolume(v.id)).size, volumeSize, 'size after the refused extends');
        if (driver.capabilities.attach) {
          const r = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
          assert.equal(r.device.size, volumeSize, 'device size after the refused extends');
          await driver.detach(r.id);
        }
        await rejectsWithCode(driver.extendVolume('00000000-0000-4000-8000-000000000005', volumeSize * 2), 'NOT_FOUND', 'extendVolume(unknown volume)', driver.name);
      },
    },
  ],
};
