import { readdir, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { ORPHAN_AGE_MS } from '../src/snapshot-orphans.js';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * Contract (snapshot-orphans.ts): what a createSnapshot or deleteSnapshot killed midway leaves in
 * `snapshots/` — an image copy and bitmap directory with no sidecar — is removed by a later
 * createSnapshot once it is over a day old; younger leftovers (perhaps a live creator's) and every
 * snapshot with a sidecar stay. The leftovers here are real ones: a snapshot's files whose
 * sidecar is gone, as a deleteSnapshot killed right after its unlink of the sidecar leaves them.
 */
describe('leftovers of a killed snapshot create or delete', () => {
  const t = driverPerTest();

  it('are removed by the next createSnapshot once a day old; recent ones and real snapshots stay', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, patternBytes(2 * MiB, 1));
    await t.driver.detach(a.id);
    await t.driver.changedBlockTracking.createCheckpoint(v.id);
    const kept = await t.driver.createSnapshot(v.id, 'kept');
    const old = await t.driver.createSnapshot(v.id, 'old leftover');
    const young = await t.driver.createSnapshot(v.id, 'young leftover');
    const snaps = join(t.dir, 'snapshots');
    // Killed after the sidecar went: the image copy (2 MiB of data) and bitmaps stay, unlisted.
    for (const s of [old, young]) await unlink(join(snaps, `${s.id}.json`));
    const longAgo = new Date(Date.now() - ORPHAN_AGE_MS - 60_000);
    for (const s of [old, kept]) {
      await utimes(join(snaps, `${s.id}.img`), longAgo, longAgo);
      await utimes(join(snaps, `${s.id}.cbt`), longAgo, longAgo);
    }
    expect((await t.driver.listSnapshots(v.id)).map((s) => s.id)).toEqual([kept.id]);

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
});
