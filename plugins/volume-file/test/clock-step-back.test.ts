import assert from 'node:assert/strict';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, it } from 'vitest';
import { fileSystemClock, type ImageStamp, type StampClock } from '@cairn/core';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest, useClock } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const HOUR_NS = 3_600_000_000_000n;

/**
 * This machine's file-system clock, set back (as NTP or an operator steps a clock that ran ahead)
 * once `stepBack` is called: every time taken from then on (a probe reading, a ctime or mtime a
 * change gets) reads `by` earlier, while the times already given keep their values, so an image
 * last changed before the step has a ctime in the clock's future. The system clock itself is
 * never touched.
 */
class SteppedBackClock implements StampClock {
  private step: { at: bigint; by: bigint } | undefined;

  constructor(private readonly dir: string) {}

  async stepBack(by: bigint): Promise<void> {
    this.step = { at: await fileSystemClock.now(this.dir), by };
  }

  private read(t: bigint): bigint {
    return this.step && t >= this.step.at ? t - this.step.by : t;
  }

  async stat(path: string): Promise<ImageStamp> {
    const s = await fileSystemClock.stat(path);
    return { ...s, mtimeNs: String(this.read(BigInt(s.mtimeNs))), ctimeNs: String(this.read(BigInt(s.ctimeNs))) };
  }

  async now(dir: string): Promise<bigint> {
    return this.read(await fileSystemClock.now(dir));
  }

  pause(attempt: number): Promise<void> {
    return fileSystemClock.pause(attempt);
  }

  touch(path: string): Promise<void> {
    return fileSystemClock.touch(path);
  }
}

async function changedOrNotFound(d: FileVolumeDriver, volumeId: string, cp: string): Promise<unknown> {
  try {
    return await d.changedBlockTracking.changedSince('volume', volumeId, cp);
  } catch (err) {
    if ((err as { code?: string }).code === 'NOT_FOUND') return 'NOT_FOUND';
    throw err;
  }
}

// A clock set back below an image's ctime could not get past it: every settle waited out its
// patience (~3.4 s) and saved a racy stamp, so every attach (read-only too), detach and checkpoint
// of a volume not written since waited, and each checkpoint was inconsistent at the next check —
// no incremental backup until the clock caught up with the image (an hour, or years after a wrong
// RTC). The driver now gives the image a fresh ctime from the set-back clock and settles on that.
describe('FileVolumeDriver: the clock set back below the image’s ctime', () => {
  const t = driverPerTest();
  let clock: SteppedBackClock;
  const image = (id: string) => join(t.dir, 'volumes', `${id}.img`);
  const savedStamp = async (id: string) => (JSON.parse(await readFile(join(t.dir, 'volumes', `${id}.json`), 'utf8')) as { imageStamp: ImageStamp }).imageStamp;

  beforeEach(() => {
    clock = new SteppedBackClock(t.dir);
    useClock(t.driver, clock);
  });

  it('a checkpoint made after the step stays consistent, and a later write behind the driver is still seen', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, Buffer.alloc(4 * KiB, 1));
    await t.driver.detach(a.id);
    await clock.stepBack(HOUR_NS);

    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    assert.equal((await savedStamp(v.id)).racy, undefined, 'the checkpoint’s stamp is settled, not racy');
    const ro = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await t.driver.detach(ro.id);
    assert.deepEqual(await changedOrNotFound(t.driver, v.id, cp.id), []);

    const fh = await open(image(v.id), 'r+');
    await fh.write(Buffer.alloc(4 * KiB, 0xee), 0, 4 * KiB, 2 * MiB);
    await fh.close();
    assert.equal(await changedOrNotFound(t.driver, v.id, cp.id), 'NOT_FOUND');
  });

  it('a read-write session that wrote nothing ends with a settled stamp, and its checkpoint stays consistent', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await clock.stepBack(HOUR_NS);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await t.driver.detach(a.id);
    assert.equal((await savedStamp(v.id)).racy, undefined);
    assert.deepEqual(await changedOrNotFound(t.driver, v.id, cp.id), []);
  });
});
