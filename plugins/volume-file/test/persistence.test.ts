import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DriverRegistry } from '@cairn/core';
import { patternBytes, rejectsWithCode } from '@cairn/conformance';
import { FileVolumeDriver, fileVolumeModule } from '../src/index.js';
import { driverPerTest, removeDir, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

describe('FileVolumeDriver state in its directory', () => {
  const t = driverPerTest();
  const sidecar = (kind: 'volumes' | 'snapshots', id: string) => join(t.dir, kind, `${id}.json`);

  it('a second driver instance on the same directory sees the same volumes, bytes, snapshots and checkpoints', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB, name: 'data', metadata: { tier: 'gold' } });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const bytes = patternBytes(100_000, 5);
    await a.device.write(MiB, bytes);
    await t.driver.detach(a.id);
    const snap = await t.driver.createSnapshot(v.id, 'snap');

    const other = new FileVolumeDriver({ directory: t.dir });
    assert.deepEqual(await other.listVolumes(), await t.driver.listVolumes());
    assert.deepEqual(await other.getVolume(v.id), { ...v, status: 'available' });
    assert.deepEqual(await other.listSnapshots(v.id), [snap]);
    assert.deepEqual(await other.changedBlockTracking.listCheckpoints(v.id), [cp]);
    const r = await other.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.ok((await r.device.read(MiB, bytes.length)).equals(bytes));
    assert.deepEqual(await r.device.extents({ kind: 'changed', since: cp.id }), [{ offset: MiB, length: 2 * 65536 }]);
    await other.detach(r.id);
  });

  it('attach(rw) through a second driver instance while the first holds the volume read-write fails with BUSY', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const other = new FileVolumeDriver({ directory: t.dir });
    await rejectsWithCode(other.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) from a second instance');
    assert.equal((await other.getVolume(v.id)).status, 'in-use');
    await t.driver.detach(a.id);
    const b = await other.attach({ kind: 'volume', id: v.id }, 'rw');
    await other.detach(b.id);
  });

  it('attach(rw) next to a read-only attachment fails with BUSY, of this instance as of a second one, and works once both readers are gone', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const ro = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    const other = new FileVolumeDriver({ directory: t.dir });
    const otherRo = await other.attach({ kind: 'volume', id: v.id }, 'ro');
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) while this instance and another read');
    await t.driver.detach(ro.id);
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'rw'), 'BUSY', 'attach(rw) while another instance reads');
    await other.detach(otherRo.id);
    const rw = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await rw.device.write(3 * MiB, Buffer.alloc(10, 9));
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'ro'), 'BUSY', 'attach(ro) from this instance while written');
    await rejectsWithCode(other.attach({ kind: 'volume', id: v.id }, 'ro'), 'BUSY', 'attach(ro) from another instance while written');
    await t.driver.detach(rw.id);
    const again = await other.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.ok((await again.device.read(3 * MiB, 10)).equals(Buffer.alloc(10, 9)));
    assert.deepEqual(await again.device.extents({ kind: 'changed', since: cp.id }), [{ offset: 3 * MiB, length: 65536 }], 'the saved bitmap');
    await other.detach(again.id);
  });

  it('a volume whose sidecar is damaged is listed and got with status error, and its attach fails with CORRUPT', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    for (const damage of ['{"format":1,"kind":"vol', '{}', '[1,2]', JSON.stringify({ ...JSON.parse(await readFile(sidecar('volumes', v.id), 'utf8')), size: -1 })]) {
      await writeFile(sidecar('volumes', v.id), damage);
      assert.equal((await t.driver.getVolume(v.id)).status, 'error', `getVolume(${damage})`);
      assert.deepEqual((await t.driver.listVolumes()).map((x) => [x.id, x.status]), [[v.id, 'error']], `listVolumes(${damage})`);
      await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'ro'), 'CORRUPT', `attach(${damage})`);
    }
  });

  it('a snapshot whose sidecar is damaged is left out of listSnapshots, and its attach fails with CORRUPT', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const snap = await t.driver.createSnapshot(v.id);
    await writeFile(sidecar('snapshots', snap.id), 'not json');
    assert.deepEqual(await t.driver.listSnapshots(v.id), []);
    await rejectsWithCode(t.driver.attach({ kind: 'snapshot', id: snap.id }, 'ro'), 'CORRUPT', 'attach(snapshot)');
  });

  it('an image whose size disagrees with its sidecar fails attach with CORRUPT', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    await writeFile(join(t.dir, 'volumes', `${v.id}.img`), Buffer.alloc(5 * MiB));
    await rejectsWithCode(t.driver.attach({ kind: 'volume', id: v.id }, 'ro'), 'CORRUPT', 'attach(oversized image)');
  });

  it('after a simulated crash (writer mark left in the sidecar) extents(changed) fails with NOT_FOUND and the volume works', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const record = JSON.parse(await readFile(sidecar('volumes', v.id), 'utf8'));
    record.writer = { pid: 2 ** 22 + 1, hostname: 'gone', since: new Date().toISOString() };
    await writeFile(sidecar('volumes', v.id), JSON.stringify(record));
    assert.equal((await t.driver.getVolume(v.id)).status, 'available', 'nobody holds the lock of a dead writer');
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(512, 1));
    await rejectsWithCode(a.device.extents({ kind: 'changed', since: cp.id }), 'NOT_FOUND', 'extents(changed) after the crash');
    await t.driver.detach(a.id);
    const after = JSON.parse(await readFile(sidecar('volumes', v.id), 'utf8'));
    assert.equal(after.writer, null, 'a clean detach clears the writer mark');
    assert.deepEqual(after.checkpoints.map((c: { consistent: boolean }) => c.consistent), [false]);
  });

  it('a damaged bitmap makes extents(changed) fail with NOT_FOUND instead of under-reporting', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(512, 1));
    await t.driver.detach(a.id);
    const bitmap = join(t.dir, 'volumes', `${v.id}.cbt`, `${cp.id}.bitmap`);
    const bytes = await readFile(bitmap);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(bitmap, bytes);
    const r = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await rejectsWithCode(r.device.extents({ kind: 'changed', since: cp.id }), 'NOT_FOUND', 'extents(changed) with a damaged bitmap');
    await t.driver.detach(r.id);
  });

  it('temporary files left by an interrupted sidecar write are not listed as volumes', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    await writeFile(join(t.dir, 'volumes', `.${v.id}.json.abc.tmp`), '{');
    await writeFile(join(t.dir, 'volumes', 'notes.json'), '{');
    assert.deepEqual((await t.driver.listVolumes()).map((x) => x.id), [v.id]);
  });

  it('getVolume of a malformed id fails with NOT_FOUND without touching other paths', async () => {
    await rejectsWithCode(t.driver.getVolume('../../etc/passwd'), 'NOT_FOUND', 'getVolume(path)');
    await rejectsWithCode(t.driver.attach({ kind: 'snapshot', id: '..' }, 'ro'), 'NOT_FOUND', 'attach(path)');
  });
});

describe('fileVolumeModule', () => {
  it('createVolumeDriver("file", {directory}) builds a working FileVolumeDriver', async () => {
    const dir = await tempDir();
    try {
      const registry = DriverRegistry.compose(fileVolumeModule);
      const driver = await registry.createVolumeDriver('file', { directory: dir });
      assert.ok(driver instanceof FileVolumeDriver);
      assert.equal(driver.name, 'file');
      const v = await driver.createVolume({ size: MiB });
      assert.deepEqual((await driver.listVolumes()).map((x) => x.id), [v.id]);
    } finally {
      await removeDir(dir);
    }
  });

  it('createVolumeDriver("file") without a string directory fails with INVALID_INPUT', async () => {
    const registry = DriverRegistry.compose(fileVolumeModule);
    for (const options of [{}, { directory: 42 }, { directory: '' }]) {
      await rejectsWithCode(registry.createVolumeDriver('file', options), 'INVALID_INPUT', `create(${JSON.stringify(options)})`);
    }
  });

  it('an unknown option (a misspelt key) fails with INVALID_INPUT naming it, from the factory and the constructor alike', async () => {
    const dir = await tempDir();
    try {
      const registry = DriverRegistry.compose(fileVolumeModule);
      for (const options of [{ directory: dir, directroy: dir }, { directory: dir, readOnly: true }]) {
        const key = Object.keys(options)[1]!;
        await expect(registry.createVolumeDriver('file', options), key).rejects.toMatchObject({
          code: 'INVALID_INPUT',
          message: expect.stringContaining(key),
          details: { option: key },
        });
        expect(() => new FileVolumeDriver(options as unknown as { directory: string }), key).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', details: { option: key } }));
      }
      expect(await readdir(dir)).toEqual([]); // nothing made for a refused driver
    } finally {
      await removeDir(dir);
    }
  });
});
