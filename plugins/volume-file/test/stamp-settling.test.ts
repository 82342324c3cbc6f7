import assert from 'node:assert/strict';
import { open, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { fileSystemClock, type ImageStamp, type StampClock } from '@cairn/core';
import { FileVolumeDriver } from '../src/index.js';
import { tryLock } from '../src/file-lock.js';
import { driverPerTest, useClock } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * The real file-system clock, calling `onSettle` at the first clock reading of each settle
 * (settledStampOf's first `now`, i.e. one not right after a pause) before taking it.
 */
abstract class SettleHookClock implements StampClock {
  private paused = false;

  protected abstract onSettle(): Promise<void>;

  stat(path: string): Promise<ImageStamp> {
    this.paused = false;
    return fileSystemClock.stat(path);
  }

  async now(dir: string): Promise<bigint> {
    if (!this.paused) await this.onSettle();
    this.paused = false;
    return fileSystemClock.now(dir);
  }

  async pause(attempt: number): Promise<void> {
    this.paused = true;
    await fileSystemClock.pause(attempt);
  }
  touch(path: string): Promise<void> {
    return fileSystemClock.touch(path);
  }
}

/**
 * Counts the image stamps settled and how many of them were read while the driver's metadata lock
 * (flock on `<dir>/.lock`) was held, tried from a descriptor of its own.
 */
class WatchedClock extends SettleHookClock {
  settles = 0;
  settlesUnderMetadataLock = 0;

  constructor(private readonly directory: string) {
    super();
  }

  protected async onSettle(): Promise<void> {
    this.settles++;
    const lock = await tryLock(join(this.directory, '.lock'), 'exclusive', 'test');
    if (lock) await lock.release();
    else this.settlesUnderMetadataLock++;
  }
}

/** Waits at each settle for `during` to finish first: what happens while the driver settles a stamp. Records `during`'s outcome. */
class ClockWaitingFor extends SettleHookClock {
  outcomes: string[] = [];

  constructor(private readonly during: () => Promise<unknown>) {
    super();
  }

  protected async onSettle(): Promise<void> {
    this.outcomes.push(
      await this.during().then(
        () => 'done',
        (err: { code?: string }) => `error ${String(err.code)}`,
      ),
    );
  }
}

function watch(d: FileVolumeDriver, directory: string): WatchedClock {
  const clock = new WatchedClock(directory);
  useClock(d, clock);
  return clock;
}

async function writeBehindTheDriver(image: string): Promise<void> {
  const fh = await open(image, 'r+');
  try {
    await fh.write(Buffer.alloc(4 * KiB, 0xee), 0, 4 * KiB, 0);
  } finally {
    await fh.close();
  }
}

async function changed(d: FileVolumeDriver, volumeId: string, cp: string): Promise<unknown> {
  return d.changedBlockTracking.changedSince('volume', volumeId, cp).catch((err: { code?: string }) => err.code);
}

describe('FileVolumeDriver: image stamps are settled once, outside the metadata lock', () => {
  const t = driverPerTest();

  it('attach of a volume written behind the driver settles the new stamp once, not under the metadata lock, and the checkpoint becomes inconsistent', async () => {
    const v = await t.driver.createVolume({ size: MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    await writeBehindTheDriver(join(t.dir, 'volumes', `${v.id}.img`));
    const clock = watch(t.driver, t.dir);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await t.driver.detach(a.id);
    assert.deepEqual({ settles: clock.settles, underLock: clock.settlesUnderMetadataLock }, { settles: 1, underLock: 0 });
    assert.equal(await changed(t.driver, v.id, cp.id), 'NOT_FOUND', 'the checkpoint that missed the write');
    // The recovered stamp matches the image: nothing more to recover, nothing settled.
    const again = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    await t.driver.detach(again.id);
    assert.equal(clock.settles, 1, 'settles after a second attach');
  });

  it('createCheckpoint with no writer settles its stamp outside the metadata lock, once also after a write behind the driver', async () => {
    const v = await t.driver.createVolume({ size: MiB });
    const clock = watch(t.driver, t.dir);
    const first = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    assert.deepEqual({ settles: clock.settles, underLock: clock.settlesUnderMetadataLock }, { settles: 1, underLock: 0 });
    await writeBehindTheDriver(join(t.dir, 'volumes', `${v.id}.img`));
    const second = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    assert.deepEqual({ settles: clock.settles, underLock: clock.settlesUnderMetadataLock }, { settles: 2, underLock: 0 });
    assert.equal(await changed(t.driver, v.id, first.id), 'NOT_FOUND', 'the checkpoint that missed the write');
    assert.deepEqual(await changed(t.driver, v.id, second.id), [], 'the checkpoint taken after it');
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(2 * 64 * KiB, Buffer.alloc(512, 1));
    await t.driver.detach(a.id);
    assert.deepEqual(await changed(t.driver, v.id, second.id), [{ offset: 2 * 64 * KiB, length: 64 * KiB }]);
  });

  it('extendVolume settles its stamps outside the metadata lock: once, and twice after a write behind the driver (the recovery, then the grown image)', async () => {
    const v = await t.driver.createVolume({ size: MiB });
    const cp = await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const clock = watch(t.driver, t.dir);
    await t.driver.extendVolume(v.id, 2 * MiB);
    assert.deepEqual({ settles: clock.settles, underLock: clock.settlesUnderMetadataLock }, { settles: 1, underLock: 0 });
    assert.deepEqual(await changed(t.driver, v.id, cp.id), [{ offset: MiB, length: MiB }], 'the grown tail, and the stamp of the grown image matches');
    await writeBehindTheDriver(join(t.dir, 'volumes', `${v.id}.img`));
    await t.driver.extendVolume(v.id, 3 * MiB);
    assert.deepEqual({ settles: clock.settles, underLock: clock.settlesUnderMetadataLock }, { settles: 3, underLock: 0 });
    assert.equal(await changed(t.driver, v.id, cp.id), 'NOT_FOUND', 'the checkpoint that missed the write');
  });

  it('attach healing an interrupted extend settles the new stamp outside the metadata lock', async () => {
    const v = await t.driver.createVolume({ size: 2 * MiB });
    await truncate(join(t.dir, 'volumes', `${v.id}.img`), MiB); // as an extend that crashed before its ftruncate
    const clock = watch(t.driver, t.dir);
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
    assert.equal(a.device.size, 2 * MiB);
    await t.driver.detach(a.id);
    assert.deepEqual({ settles: clock.settles, underLock: clock.settlesUnderMetadataLock }, { settles: 1, underLock: 0 });
  });

  it('while extendVolume settles a stamp, another driver instance changes the metadata of another volume', async () => {
    const other = new FileVolumeDriver({ directory: t.dir });
    const v = await t.driver.createVolume({ size: MiB });
    const w = await other.createVolume({ size: MiB });
    const clock = new ClockWaitingFor(() => other.setVolumeMetadata(w.id, { during: 'settle' }));
    useClock(t.driver, clock);
    await t.driver.extendVolume(v.id, 2 * MiB);
    assert.deepEqual(clock.outcomes, ['done'], 'the other instance\'s metadata change made during each settle');
    assert.deepEqual((await other.getVolume(w.id)).metadata, { during: 'settle' });
    assert.equal((await t.driver.getVolume(v.id)).size, 2 * MiB);
  });
});
