import assert from 'node:assert/strict';
import type { Group } from '../harness.js';
import { assertSameBytes, patternBytes, rejectsWithCode } from '../harness.js';
import type { VolumeDriverContext } from './context.js';

export const volumeIo: Group<VolumeDriverContext> = {
  name: 'attach, read, write, detach',
  cases: [
    {
      name: 'a new volume reads as zeros',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        assert.equal(a.device.size, volumeSize);
        assertSameBytes(await a.device.read(0, volumeSize), Buffer.alloc(volumeSize), 'fresh volume');
        await driver.detach(a.id);
      },
    },
    {
      name: 'write then read returns the exact bytes, at unaligned offsets, across detach and attach',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const writes = [
          { offset: 0, data: patternBytes(4096, 1) },
          { offset: 12345, data: patternBytes(70_001, 2) },
          { offset: volumeSize / 2 - 3, data: patternBytes(1_048_583, 3) },
          { offset: volumeSize - 511, data: patternBytes(511, 4) },
        ];
        for (const w of writes) await rw.device.write(w.offset, w.data);
        await rw.device.flush();
        await driver.detach(rw.id);
        const expected = Buffer.alloc(volumeSize);
        for (const w of writes) w.data.copy(expected, w.offset);
        const ro = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        assertSameBytes(await ro.device.read(0, volumeSize), expected, 'whole volume');
        assertSameBytes(await ro.device.read(12340, 20), expected.subarray(12340, 12360), 'small unaligned read');
        await driver.detach(ro.id);
      },
    },
    {
      name: 'read(offset, length, into) puts the bytes in into and resolves with into.subarray(0, length), at unaligned offsets too',
      async run({ driver, volumeSize }) {
        // Callers (the backup writer) read into their own memory and use it, not the result: a
        // driver that resolves with a buffer of its own leaves them the bytes of an earlier read.
        const v = await driver.createVolume({ size: volumeSize });
        const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const data = patternBytes(volumeSize, 8);
        await rw.device.write(0, data);
        await rw.device.flush();
        await driver.detach(rw.id);
        const ro = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        for (const [offset, length] of [[4096, 8192], [12345, 70_001], [0, volumeSize]] as const) {
          const into = Buffer.alloc(length + 512, 0xee);
          const got = await ro.device.read(offset, length, into);
          assertSameBytes(into.subarray(0, length), data.subarray(offset, offset + length), `into after read(${offset}, ${length}, into)`);
          assert.ok(got.buffer === into.buffer && got.byteOffset === into.byteOffset && got.length === length, `read(${offset}, ${length}, into) must resolve with into.subarray(0, ${length}), not a buffer of its own`);
        }
        await driver.detach(ro.id);
      },
    },
    {
      name: 'writeZeroes zeroes exactly its range and keeps the neighbours',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        const data = patternBytes(volumeSize, 7);
        await a.device.write(0, data);
        await a.device.writeZeroes(1000, 200_000);
        await a.device.writeZeroes(volumeSize - 65536, 65536);
        data.fill(0, 1000, 201_000);
        data.fill(0, volumeSize - 65536);
        assertSameBytes(await a.device.read(0, volumeSize), data, 'after writeZeroes');
        await driver.detach(a.id);
      },
    },
    {
      name: 'a read-only device refuses write and writeZeroes with INVALID_INPUT',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        assert.equal(a.device.mode, 'ro');
        await rejectsWithCode(a.device.write(0, Buffer.alloc(512, 1)), 'INVALID_INPUT', 'write(ro)', driver.name);
        await rejectsWithCode(a.device.writeZeroes(0, 512), 'INVALID_INPUT', 'writeZeroes(ro)', driver.name);
        await driver.detach(a.id);
      },
    },
    {
      name: 'reads and writes outside the device fail with INVALID_INPUT',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await rejectsWithCode(a.device.read(volumeSize - 10, 11), 'INVALID_INPUT', 'read past end', driver.name);
        await rejectsWithCode(a.device.read(-1, 1), 'INVALID_INPUT', 'read at -1', driver.name);
        await rejectsWithCode(a.device.write(volumeSize, Buffer.alloc(1)), 'INVALID_INPUT', 'write past end', driver.name);
        await rejectsWithCode(a.device.writeZeroes(volumeSize - 512, 1024), 'INVALID_INPUT', 'writeZeroes past end', driver.name);
        await driver.detach(a.id);
      },
    },
    {
      name: 'extendVolume of an attached volume fails with BUSY and changes nothing: size, bytes and the attachment',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const data = patternBytes(65536, 62);
        for (const mode of ['rw', 'ro'] as const) {
          const a = await driver.attach({ kind: 'volume', id: v.id }, mode);
          if (mode === 'rw') await a.device.write(volumeSize - 65536, data);
          await rejectsWithCode(driver.extendVolume(v.id, volumeSize * 2), 'BUSY', `extendVolume(attached ${mode})`, driver.name);
          assert.equal(a.device.size, volumeSize, 'the attached device keeps its size');
          assertSameBytes(await a.device.read(volumeSize - 65536, 65536), data, `the ${mode} attachment reads the volume after the refused extend`);
          await driver.detach(a.id);
          assert.equal((await driver.getVolume(v.id)).size, volumeSize, `a refused extend while attached ${mode} keeps the size`);
        }
        const r = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        assert.equal(r.device.size, volumeSize, 'size of the next attachment');
        assertSameBytes(await r.device.read(volumeSize - 65536, 65536), data, 'the tail after the refused extends');
        await driver.detach(r.id);
      },
    },
    {
      name: 'attach rw marks the volume in-use, a second rw attach fails with BUSY, detach makes it available',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        assert.equal((await driver.getVolume(v.id)).status, 'in-use');
        await rejectsWithCode(driver.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'second rw attach', driver.name);
        await driver.detach(a.id);
        assert.equal((await driver.getVolume(v.id)).status, 'available');
      },
    },
    {
      name: 'detach is idempotent: a second detach and an unknown attachment id succeed',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await driver.detach(a.id);
        await driver.detach(a.id);
        await driver.detach('00000000-0000-4000-8000-00000000dead');
        await rejectsWithCode(a.device.read(0, 512), 'INVALID_INPUT', 'read after detach', driver.name);
      },
    },
    {
      name: 'a detached device refuses every call with INVALID_INPUT and writes nothing, while the volume is attached anew',
      async run({ driver, volumeSize }) {
        // A device kept past its detach (a stale handle) must not write into a volume that another
        // attachment, a restore say, now holds.
        const v = await driver.createVolume({ size: volumeSize });
        const stale = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await driver.detach(stale.id);
        const data = patternBytes(65536, 67);
        const now = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
        await now.device.write(0, data);
        await rejectsWithCode(stale.device.write(0, Buffer.alloc(65536, 0xff)), 'INVALID_INPUT', 'write after detach', driver.name);
        await rejectsWithCode(stale.device.writeZeroes(0, 65536), 'INVALID_INPUT', 'writeZeroes after detach', driver.name);
        await rejectsWithCode(stale.device.read(0, 512), 'INVALID_INPUT', 'read after detach', driver.name);
        await rejectsWithCode(stale.device.flush(), 'INVALID_INPUT', 'flush after detach', driver.name);
        await rejectsWithCode(stale.device.extents({ kind: 'allocated' }), 'INVALID_INPUT', 'extents after detach', driver.name);
        await stale.device.close(); // idempotent
        assertSameBytes(await now.device.read(0, 65536), data, 'the volume, as its current attachment wrote it');
        await driver.detach(now.id);
        const ro = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
        assertSameBytes(await ro.device.read(0, 65536), data, 'the volume after the stale device was used');
        await driver.detach(ro.id);
      },
    },
    {
      name: 'attach with an unknown mode fails with INVALID_INPUT',
      async run({ driver, volumeSize }) {
        const v = await driver.createVolume({ size: volumeSize });
        await rejectsWithCode(driver.attach({ kind: 'volume', id: v.id }, 'rwx' as never), 'INVALID_INPUT', 'attach(rwx)', driver.name);
      },
    },
  ],
};
