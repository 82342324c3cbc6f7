import { randomUUID } from 'node:crypto';
import { readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { fileSystemClock, type StampClock } from '@cairn/core';
import { ORPHAN_AGE_MS } from '../src/leftover-age.js';
import { driverPerTest, useClock } from './helpers.js';

const MiB = 1024 * 1024;

/** The file-system clock of `dir` now, once it has moved past `after` (so what is changed next is later than `after`). */
async function clockPast(dir: string, after: bigint): Promise<bigint> {
  for (let i = 0; ; i++) {
    const now = await fileSystemClock.now(dir);
    if (now > after) return now;
    await sleep(Math.min(2 ** i, 50));
  }
}

/** Writes a hand-made leftover at `path`, its mtime set two days back (its ctime stays now: ctime cannot be set back). */
async function leftover(path: string, data: string | Buffer): Promise<void> {
  await writeFile(path, data);
  const old = new Date(Date.now() - 2 * ORPHAN_AGE_MS);
  await utimes(path, old, old);
}

/**
 * Contract (volume-orphans.ts, sidecar-temps.ts): what a createVolume killed between its image and
 * its sidecar leaves (`volumes/<id>.img`, no sidecar), and the temp files of sidecar writes killed
 * before their rename (`.<id>.json.<random>.tmp`), are removed by createSnapshot once unchanged for
 * over a day by the file system's clock; younger ones (a create or write perhaps under way) and
 * every file of a listed volume stay. deleteVolume removes its volume's temp sidecar files at once.
 * A day cannot pass in a test and ctime cannot be set back: the driver reads the clock a day ahead
 * of a reading taken between the old and the young leftovers.
 */
describe('leftovers of killed volume creates and sidecar writes', () => {
  const t = driverPerTest();

  it('are removed by createSnapshot once a day old; young ones, deletion markers and real volumes stay', async () => {
    const vols = join(t.dir, 'volumes');
    const snaps = join(t.dir, 'snapshots');
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const oldImage = randomUUID();
    const oldTemps = [join(vols, `.${randomUUID()}.json.0123456789ab.tmp`), join(snaps, `.${randomUUID()}.json.0123456789ab.tmp`), join(vols, `.${v.id}.json.00112233aabb.tmp`)];
    await leftover(join(vols, `${oldImage}.img`), Buffer.alloc(MiB, 7));
    for (const p of oldTemps) await leftover(p, '{"format":1,"metadata":{"secret":"x"}}');
    const deleting = randomUUID(); // a deletion killed midway: finishDeletion's, not the sweep's (its lock decides)
    await leftover(join(vols, `${deleting}.img`), 'x');
    await leftover(join(vols, `${deleting}.deleting`), '{}');
    const foreign = join(vols, 'notes.img');
    await leftover(foreign, 'x');
    const dayAgo = await clockPast(vols, 0n); // every change so far is at most this
    await clockPast(vols, dayAgo);
    await clockPast(snaps, dayAgo);
    const youngImage = randomUUID();
    const youngTemp = join(vols, `.${randomUUID()}.json.fedcba987654.tmp`);
    await leftover(join(vols, `${youngImage}.img`), 'x'); // old mtime, fresh ctime: as a copy put in place, or a create under way
    await leftover(youngTemp, '{}');
    // A day later, by the clock of the driver's directories.
    const later: StampClock = { ...fileSystemClock, now: async (dir) => ([vols, snaps].includes(dir) ? dayAgo + BigInt(ORPHAN_AGE_MS) * 1_000_000n : fileSystemClock.now(dir)) };
    useClock(t.driver, later);

    await t.driver.createSnapshot(v.id);

    const left = await readdir(vols);
    expect(left).not.toContain(`${oldImage}.img`);
    for (const p of oldTemps) expect([...left, ...(await readdir(snaps))]).not.toContain(p.split('/').pop());
    expect(left).toEqual(expect.arrayContaining([`${v.id}.img`, `${v.id}.json`, `${youngImage}.img`, youngTemp.split('/').pop(), `${deleting}.img`, `${deleting}.deleting`, 'notes.img']));
    expect((await t.driver.listVolumes()).map((x) => x.id)).toEqual([v.id]);
  });

  it('deleteVolume removes the temp files of its sidecar writes, and no other volume\'s', async () => {
    const vols = join(t.dir, 'volumes');
    const v = await t.driver.createVolume({ size: MiB, metadata: { owner: 'a' } });
    const other = await t.driver.createVolume({ size: MiB });
    const mine = [`.${v.id}.json.0123456789ab.tmp`, `.${v.id}.json.ba9876543210.tmp`];
    const theirs = `.${other.id}.json.0123456789ab.tmp`;
    for (const n of [...mine, theirs]) await writeFile(join(vols, n), '{"metadata":{"owner":"a"}}');
    await t.driver.deleteVolume(v.id);
    const left = await readdir(vols);
    expect(left.filter((n) => n.includes(v.id))).toEqual([]);
    expect(left).toContain(theirs);
  });

  it('a deletion killed midway, finished by the next listing, removes the temp files of its sidecar too', async () => {
    const vols = join(t.dir, 'volumes');
    const v = await t.driver.createVolume({ size: MiB });
    const dead = randomUUID();
    await writeFile(join(vols, `${dead}.deleting`), '{}');
    await writeFile(join(vols, `.${dead}.json.0123456789ab.tmp`), '{}');
    expect((await t.driver.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    expect((await readdir(vols)).filter((n) => n.includes(dead))).toEqual([]);
  });
});
