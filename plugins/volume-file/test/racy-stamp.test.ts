import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, copyFile, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, it } from 'vitest';
import { CLOCK_PROBE, fileSystemClock, sameStamp, settledStampOf, stampOf, type Extent, type ImageStamp, type StampClock } from '@cairn/core';
import { FileVolumeDriver } from '../src/index.js';
import { CoarseClock } from './coarse-clock.js';
import { dirPerTest, driverPerTest, useClock } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Overwrites 4 KiB at `offset` of the image file itself, bypassing the driver, at once (same tick). */
async function writeBehindTheDriver(image: string, offset: number): Promise<void> {
  const fh = await open(image, 'r+');
  try {
    await fh.write(Buffer.alloc(4 * KiB, 0xee), 0, 4 * KiB, offset);
  } finally {
    await fh.close();
  }
}

async function changed(d: FileVolumeDriver, volumeId: string, cp: string): Promise<Extent[] | 'NOT_FOUND'> {
  try {
    return await d.changedBlockTracking.changedSince('volume', volumeId, cp);
  } catch (err) {
    if ((err as { code?: string }).code === 'NOT_FOUND') return 'NOT_FOUND';
    throw err;
  }
}

const covers = (extents: Extent[], offset: number) => extents.some((e) => e.offset <= offset && offset < e.offset + e.length);

describe('FileVolumeDriver: a write behind the driver in the same timestamp tick as the image stamp', () => {
  const t = driverPerTest();
  let clock: CoarseClock;

  beforeEach(async () => {
    clock = new CoarseClock(t.dir);
    await clock.tick();
    useClock(t.driver, clock);
  });

  const image = (id: string) => join(t.dir, 'volumes', `${id}.img`);

  it('right after a clean detach is seen: the checkpoint is refused, not under-reported', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(4 * KiB, 1));
    await t.driver.detach(a.id);
    await writeBehindTheDriver(image(v.id), 2 * MiB); // no tick since the t.driver's own last write
    const seen = await changed(t.driver, v.id, cp.id);
    assert.ok(seen === 'NOT_FOUND' || covers(seen, 2 * MiB), `the write at 2 MiB is reported or the checkpoint refused, got ${JSON.stringify(seen)}`);
    // Attach persists the verdict.
    const b = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await t.driver.detach(b.id);
    assert.equal(await changed(t.driver, v.id, cp.id), 'NOT_FOUND');
  });

  it('right after createCheckpoint is seen', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await writeBehindTheDriver(image(v.id), MiB);
    const seen = await changed(t.driver, v.id, cp.id);
    assert.ok(seen === 'NOT_FOUND' || covers(seen, MiB), `got ${JSON.stringify(seen)}`);
  });

  it('without a write behind its back, the driver keeps its checkpoint consistent under the coarse clock', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(3 * MiB, Buffer.alloc(4 * KiB, 1));
    await t.driver.detach(a.id);
    await clock.tick();
    const ro = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await t.driver.detach(ro.id);
    assert.deepEqual(await changed(t.driver, v.id, cp.id), [{ offset: 3 * MiB, length: 64 * KiB }]);
  });

  it('a clock that never moves past the image yields a racy stamp, which makes the checkpoints inconsistent', async () => {
    const frozen = new CoarseClock(t.dir, true);
    await frozen.tick();
    useClock(t.driver, frozen);
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const saved = JSON.parse(await readFile(join(t.dir, 'volumes', `${v.id}.json`), 'utf8')) as { imageStamp: ImageStamp };
    assert.equal(saved.imageStamp.racy, true);
    assert.equal(await changed(t.driver, v.id, cp.id), 'NOT_FOUND');
  });
});

describe('settledStampOf on this machine’s file system', () => {
  const t = dirPerTest();

  it('any write right after the stamp changes it, also when the stamp follows a write at once', async () => {
    const path = join(t.dir, 'img');
    await writeFile(path, Buffer.alloc(64 * KiB));
    const fh = await open(path, 'r+');
    try {
      for (let i = 0; i < 200; i++) {
        await fh.write(Buffer.alloc(512, i & 0xff), 0, 512, 0);
        const stamp = await settledStampOf(path);
        assert.ok(!stamp.racy);
        assert.ok(sameStamp(stamp, await stampOf(path)), 'an untouched image matches its stamp');
        await fh.write(Buffer.alloc(512, (i + 1) & 0xff), 0, 512, 4096);
        assert.ok(!sameStamp(stamp, await stampOf(path)), `write ${i} went unseen`);
      }
    } finally {
      await fh.close();
    }
  });
});

// Needs root to run a process as another user; CI runs as root (a skip under CI=true fails it).
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('racy-stamp: the other-user clock probe test is skipped: not root');
describe.runIf(isRoot)('the clock probe of another user', () => {
  let dir: string;
  let moduleDir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-clock-probe-'));
    await chmod(dir, 0o777); // uid 65534 may create files here, as a shared volumes directory
    // The checkout may not be reachable by uid 65534 (a mktemp -d clone is 0700): the module
    // (core's stamp clock: node: imports only) is copied where it can read it.
    moduleDir = await mkdtemp(join(tmpdir(), 'cairn-clock-module-'));
    await copyFile(fileURLToPath(new URL('../../../packages/core/dist/drivers/stamp-clock.js', import.meta.url)), join(moduleDir, 'stamp-clock.mjs'));
    await chmod(moduleDir, 0o755);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(moduleDir, { recursive: true, force: true });
  });

  it('is read through a fresh file, removed at once, when the probe is not the caller’s to change', async () => {
    await writeFile(join(dir, CLOCK_PROBE), ''); // root's: uid 65534 may not set its times
    const module = pathToFileURL(join(moduleDir, 'stamp-clock.mjs')).href;
    const script = `import(${JSON.stringify(module)}).then(async (m) => process.stdout.write(String(await m.fileSystemClock.now(process.argv[1]))), (e) => { process.stderr.write(String(e)); process.exit(2); }).catch((e) => { process.stderr.write(String(e.code ?? e)); process.exit(1); })`;
    const before = (await stat(dir, { bigint: true })).ctimeNs;
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ['-e', script, dir], { uid: 65534, gid: 65534, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(out.code, 0, out.stderr);
    assert.ok(BigInt(out.stdout) >= before, 'a reading of the clock, not older than the directory');
    assert.deepEqual(await readdir(dir), [CLOCK_PROBE], 'the fresh file is removed');
  });
});
