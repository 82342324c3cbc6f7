import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'vitest';
import { rejectsWithCode } from '@cairn/conformance';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const fixture = fileURLToPath(new URL('./fixtures/resize-limited.mjs', import.meta.url));

/** Runs the fixture with file sizes limited to 8–16 MiB (ulimit -f counts 512- or 1024-byte blocks). */
async function runLimited(dir: string, volumeId: string, size: number): Promise<Record<string, string>> {
  const script = 'ulimit -f 16384 && exec "$0" "$@"';
  const { stdout } = await promisify(execFile)('sh', ['-c', script, process.execPath, fixture, dir, volumeId, String(size)]);
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as { call: string; code: string });
  return Object.fromEntries(lines.map((l) => [l.call, l.code]));
}

/**
 * Contract: a size the file system refuses (EFBIG) fails createVolume and extendVolume with
 * INVALID_INPUT (ENOSPC would be UNAVAILABLE) and changes nothing: no orphan image, the volume keeps
 * its size, its checkpoints and its usability. A size beyond what a dirty bitmap can represent
 * fails extendVolume of a volume with checkpoints with INVALID_INPUT, also changing nothing.
 */
describe('FileVolumeDriver sizes the file system or the bitmaps refuse', () => {
  const t = driverPerTest();

  async function volumeWithChange() {
    const v = await t.driver.createVolume({ size: MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(512, 1));
    await t.driver.detach(a.id);
    return { v, cp };
  }

  it('a size larger than the file system allows (EFBIG) fails with INVALID_INPUT and changes nothing', async () => {
    const { v, cp } = await volumeWithChange();
    const files = (await readdir(join(t.dir, 'volumes'))).sort();
    assert.deepEqual(await runLimited(t.dir, v.id, GiB), { createVolume: 'INVALID_INPUT', extendVolume: 'INVALID_INPUT' });

    assert.deepEqual((await readdir(join(t.dir, 'volumes'))).sort(), files, 'no orphan image');
    assert.equal((await t.driver.getVolume(v.id)).size, MiB, 'the volume keeps its size');
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    assert.equal(a.device.size, MiB);
    assert.deepEqual(await a.device.extents({ kind: 'changed', since: cp.id }), [{ offset: 0, length: 65536 }], 'the checkpoint still tracks');
    await t.driver.detach(a.id);
    await t.driver.extendVolume(v.id, 2 * MiB);
    const r = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.deepEqual(await r.device.extents({ kind: 'changed', since: cp.id }), [{ offset: 0, length: 65536 }, { offset: MiB, length: MiB }]);
    await t.driver.detach(r.id);
  });

  it('extending a volume with checkpoints beyond what a dirty bitmap supports fails with INVALID_INPUT and changes nothing', async () => {
    const { v, cp } = await volumeWithChange();
    const bitmap = join(t.dir, 'volumes', `${v.id}.cbt`, `${cp.id}.bitmap`);
    const sidecar = join(t.dir, 'volumes', `${v.id}.json`);
    const before = { bitmap: await readFile(bitmap), sidecar: await readFile(sidecar, 'utf8') };
    await rejectsWithCode(t.driver.extendVolume(v.id, 2 ** 52), 'INVALID_INPUT', 'extendVolume(2^52) with a checkpoint');
    assert.ok((await readFile(bitmap)).equals(before.bitmap), 'the bitmap is unchanged');
    assert.equal(await readFile(sidecar, 'utf8'), before.sidecar, 'the sidecar is unchanged');
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.equal(a.device.size, MiB);
    assert.deepEqual(await a.device.extents({ kind: 'changed', since: cp.id }), [{ offset: 0, length: 65536 }]);
    await t.driver.detach(a.id);
  });
});
