import assert from 'node:assert/strict';
import type { VolumeDriver } from '@cairn/core';
import type { Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { VolumeDriverContext } from './context.js';

/** The driver's setVolumeMetadata; the group runs only for drivers that declare `volumeMetadata`. */
const setter = (driver: VolumeDriver) => {
  assert.equal(typeof driver.setVolumeMetadata, 'function', 'setVolumeMetadata is present with capabilities.volumeMetadata');
  return driver.setVolumeMetadata!.bind(driver);
};

/** `capabilities.volumeMetadata`: setVolumeMetadata replaces a volume's metadata as a whole, atomically. */
export const volumeMetadata: Group<VolumeDriverContext> = {
  name: 'volume metadata',
  cases: [
    {
      name: 'setVolumeMetadata replaces the metadata as a whole (keys absent removed) and every read shows it',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize, name: 'meta', metadata: { a: '1', b: '2' } });
        const next = { b: 'x', c: '3', 'dotted.key': '' };
        const returned = await setter(driver)(v.id, next);
        assert.equal(returned.id, v.id);
        assert.deepEqual(returned.metadata, next);
        assert.equal(returned.name, 'meta');
        assert.equal(returned.size, volumeSize);
        assert.deepEqual((await driver.getVolume(v.id)).metadata, next);
        assert.deepEqual((await driver.listVolumes()).find((x) => x.id === v.id)?.metadata, next);
        assert.deepEqual((await setter(driver)(v.id, {})).metadata, {});
        assert.deepEqual((await driver.getVolume(v.id)).metadata, {});
      },
    },
    {
      name: 'setVolumeMetadata with metadata that does not map strings to strings fails with INVALID_INPUT and changes nothing',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize, metadata: { keep: 'me' } });
        // A Map is no plain object: its entries are none of its own, so taking it would store {}.
        for (const bad of [{ n: 1 }, null, ['x'], 'text', { nested: { a: 'b' } }, new Map([['keep', 'lost']])]) {
          await rejectsWithCode(setter(driver)(v.id, bad as never), 'INVALID_INPUT', `setVolumeMetadata(${bad instanceof Map ? 'a Map' : JSON.stringify(bad)})`, driver.name);
        }
        assert.deepEqual((await driver.getVolume(v.id)).metadata, { keep: 'me' });
        // createVolume holds metadata to the same rule.
        await rejectsWithCode(driver.createVolume({ size: volumeSize, metadata: ['x'] as never }), 'INVALID_INPUT', 'createVolume(metadata array)', driver.name);
        assert.equal((await driver.listVolumes()).length, 1, 'a refused create leaves nothing behind');
      },
    },
    {
      name: 'setVolumeMetadata of an unknown or deleted volume fails with NOT_FOUND and does not bring it back',
      async run({ driver, volumeSize }) {
        await rejectsWithCode(setter(driver)('00000000-0000-4000-8000-000000000000', { a: 'b' }), 'NOT_FOUND', 'unknown volume', driver.name);
        const v = await driver.createVolume({ size: volumeSize });
        await driver.deleteVolume(v.id);
        await rejectsWithCode(setter(driver)(v.id, { a: 'b' }), 'NOT_FOUND', 'deleted volume', driver.name);
        await rejectsWithCode(driver.getVolume(v.id), 'NOT_FOUND', 'getVolume(deleted)', driver.name);
        assert.deepEqual(await driver.listVolumes(), []);
      },
    },
    {
      name: "setVolumeMetadata works on an attached volume; the attachment's bytes and the detach keep both changes",
      async run({ driver, volumeSize }) {
        if (!driver.capabilities.attach) return;
        const v = await driver.createVolume({ size: volumeSize, metadata: { old: 'yes' } });
        const data = patternBytes(volumeSize, 91);
        // An attach and a metadata change at once: neither change is lost.
        const [w] = await Promise.all([driver.attach({ kind: 'volume', id: v.id }, 'rw'), setter(driver)(v.id, { during: 'attach' })]);
        assert.deepEqual((await driver.getVolume(v.id)).metadata, { during: 'attach' });
        await w.device.write(0, data);
        await setter(driver)(v.id, { while: 'attached' });
        await driver.detach(w.id);
        const after = await driver.getVolume(v.id);
        assert.deepEqual(after.metadata, { while: 'attached' });
        assert.equal(after.status, 'available');
        const r = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        try {
          await setter(driver)(v.id, { while: 'read' });
          assertSameBytes(await r.device.read(0, volumeSize), data, 'bytes written around the metadata changes');
        } finally {
          await driver.detach(r.id);
        }
        assert.deepEqual((await driver.getVolume(v.id)).metadata, { while: 'read' });
      },
    },
    {
      name: 'another instance on the same volumes sees the new metadata',
      async run({ driver, peer, volumeSize }) {
        if (!peer) return;
        const v = await driver.createVolume({ size: volumeSize, metadata: { a: '1' } });
        await setter(driver)(v.id, { a: '2' });
        assert.deepEqual((await peer.getVolume(v.id)).metadata, { a: '2' });
        await setter(peer)(v.id, { b: '3' });
        assert.deepEqual((await driver.getVolume(v.id)).metadata, { b: '3' });
      },
    },
  ],
};
