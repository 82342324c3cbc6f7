import { execFileSync } from 'node:child_process';
import { lstat, mkdir, readdir, rename, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { fileSystemClock, type StampClock } from '@cairn/core';
import { ORPHAN_AGE_MS } from '../src/snapshot-orphans.js';
import { driverPerTest, useClock } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * Contract (snapshot-orphans.ts): what a createSnapshot or deleteSnapshot killed midway leaves in
 * `snapshots/` — an image copy and bitmap directory with no sidecar — is removed by a later
 * createSnapshot once it has been unchanged (mtime and ctime) for over a day by the file system's
 * clock; younger leftovers (perhaps a live creator's), entries just put in place by a copy that
 * keeps old mtimes, and every snapshot with a sidecar stay. The leftovers here are real ones: a
 * snapshot's files whose sidecar is gone, as a deleteSnapshot of an older driver version, killed
 * right after its unlink of the sidecar, leaves them (this version's: snapshot-deletion.test.ts). A day cannot pass in a test and ctime cannot be set back: the driver reads
 * the clock of `snapshots/` a day ahead of a reading taken between the old and the young leftovers.
 */
describe('leftovers of a killed snapshot create or delete', () => {
  const t = driverPerTest();

  /** The file-system clock of `dir` now, once it has moved past `after` (so what is changed next is later than `after`). */
  async function clockPast(dir: string, after: bigint): Promise<bigint> {
    for (let i = 0; ; i++) {
      const now = await fileSystemClock.now(dir);
      if (now > after) return now;
      await sleep(Math.min(2 ** i, 50));
    }
  }

  it('are removed by the next createSnapshot once a day old; recent ones and real snapshots stay', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, patternBytes(2 * MiB, 1));
    await t.driver.detach(a.id);
    await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const snaps = join(t.dir, 'snapshots');
    const kept = await t.driver.createSnapshot(v.id, 'kept');
    const old = await t.driver.createSnapshot(v.id, 'old leftover');
    const dayAgo = await clockPast(snaps, 0n); // every change so far is at most this
    await clockPast(snaps, dayAgo);
    const young = await t.driver.createSnapshot(v.id, 'young leftover');
    // Killed after the sidecar went: the image copy (2 MiB of data) and bitmaps stay, unlisted.
    for (const s of [old, young]) await unlink(join(snaps, `${s.id}.json`));
    expect((await t.driver.listSnapshots(v.id)).map((s) => s.id)).toEqual([kept.id]);
    // A day later, by the clock of snapshots/.
    const later: StampClock = { ...fileSystemClock, now: async (dir) => (dir === snaps ? dayAgo + BigInt(ORPHAN_AGE_MS) * 1_000_000n : fileSystemClock.now(dir)) };
    useClock(t.driver, later);

    const next = await t.driver.createSnapshot(v.id, 'next');

    const left = (await readdir(snaps)).sort();
    expect(left.filter((n) => n.startsWith(old.id))).toEqual([]);
    expect(left.filter((n) => n.startsWith(young.id))).toEqual([`${young.id}.cbt`, `${young.id}.img`]);
    expect(left.filter((n) => n.startsWith(kept.id))).toEqual([`${kept.id}.cbt`, `${kept.id}.img`, `${kept.id}.json`]);
    expect((await t.driver.listSnapshots(v.id)).map((s) => s.id)).toEqual([kept.id, next.id]);
    // The old snapshot that kept its sidecar still reads its data.
    const r = await t.driver.attach({ kind: 'snapshot', id: kept.id }, 'ro');
    expect((await r.device.read(0, 2 * MiB)).equals(patternBytes(2 * MiB, 1))).toBe(true);
    await t.driver.detach(r.id);
  });

  it('a snapshot being put in place by `cp -a` (old mtimes, sidecar last) is not taken for a leftover', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, patternBytes(2 * MiB, 7));
    await t.driver.detach(a.id);
    await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const s = await t.driver.createSnapshot(v.id, 'restored');
    const snaps = join(t.dir, 'snapshots');
    // The snapshot's files as a backup of the directory holds them: made two days ago.
    const origin = join(t.dir, 'elsewhere');
    await mkdir(origin);
    const longAgo = new Date(Date.now() - 2 * ORPHAN_AGE_MS);
    for (const ext of ['cbt', 'img', 'json']) {
      await rename(join(snaps, `${s.id}.${ext}`), join(origin, `${s.id}.${ext}`));
      await utimes(join(origin, `${s.id}.${ext}`), longAgo, longAgo);
    }
    const bitmaps = (await readdir(join(origin, `${s.id}.cbt`))).sort();
    expect(bitmaps.length).toBeGreaterThan(0);
    // cp -a puts the bitmaps and the image in place, their times kept; the sidecar comes last.
    execFileSync('cp', ['-a', join(origin, `${s.id}.cbt`), join(origin, `${s.id}.img`), snaps]);
    expect((await lstat(join(snaps, `${s.id}.img`))).mtimeMs).toBeLessThan(Date.now() - 1.5 * ORPHAN_AGE_MS); // as old as at its origin

    await t.driver.createSnapshot(v.id, 'taken meanwhile');
    execFileSync('cp', ['-a', join(origin, `${s.id}.json`), snaps]);

    expect((await readdir(join(snaps, `${s.id}.cbt`))).sort()).toEqual(bitmaps);
    expect((await t.driver.listSnapshots(v.id)).map((x) => x.id)).toContain(s.id);
    const r = await t.driver.attach({ kind: 'snapshot', id: s.id }, 'ro');
    expect((await r.device.read(0, 2 * MiB)).equals(patternBytes(2 * MiB, 7))).toBe(true);
    await t.driver.detach(r.id);
  });
});
