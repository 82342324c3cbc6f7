import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Extent } from '@cairn/core';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, pattern, qemuImg, readSidecar } from './helpers.js';
import { driversOn } from './drivers-on.js';
import { changedSince, writeVolume } from './volume-io.js';

// `qemu-img resize` of a closed volume image keeps its persistent bitmaps (qemu resizes them) but
// cannot mark a new tail dirty, and drops the bits of a cut one: checkpoints made at the old size
// must not be trusted afterwards, as after extendVolume.

const G = 64 * 1024;
const driverOn = driversOn();

const write = (d: Qcow2VolumeDriver, volumeId: string, at: number, length: number, seed: number): Promise<void> => writeVolume(d, volumeId, at, pattern(length, seed));

/** The changed extents, or the code of the error that refused them. */
const changed = (d: Qcow2VolumeDriver, target: { kind: 'volume' | 'snapshot'; id: string }, since: string): Promise<Extent[] | string> =>
  changedSince(d, target, since).catch((e: { code?: string }) => String(e.code));

function resize(d: Qcow2VolumeDriver, volumeId: string, size: number): void {
  const r = qemuImg(['resize', '-q', '--shrink', '-f', 'qcow2', join(d.directory, 'volumes', `${volumeId}.qcow2`), String(size)]);
  expect(r.status, r.stderr).toBe(0);
}

describe.skipIf(missingQemu.length > 0)(`an image resized outside the driver (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('grown by qemu-img resize while closed: extents(changed) since an older checkpoint is NOT_FOUND, and a checkpoint made after it tracks again, also after a restart', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: 8 * MiB });
    await write(d, v.id, 0, 8 * MiB, 1);
    const cp = await d.changedBlockTracking.createCheckpoint(v.id);
    resize(d, v.id, 16 * MiB); // the tail [8, 16) MiB is new: no bitmap says so

    expect(await changed(d, { kind: 'volume', id: v.id }, cp.id)).toBe('NOT_FOUND');
    expect((await readSidecar(d, v.id)).checkpoints.map((c) => c.consistent)).toEqual([false]);

    const cp2 = await d.changedBlockTracking.createCheckpoint(v.id);
    expect((await readSidecar(d, v.id)).size).toBe(16 * MiB);
    await write(d, v.id, 12 * MiB, 100, 2);
    await d.close();
    const d2 = await driverOn(d.directory); // a fresh open reconciles again
    expect(await changed(d2, { kind: 'volume', id: v.id }, cp2.id)).toEqual([{ offset: 12 * MiB, length: G }]);
  });

  it('shrunk by qemu-img resize while closed, then snapshotted (a copy): neither the copy nor the volume trusts the older checkpoint', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: 8 * MiB });
    await write(d, v.id, 0, 8 * MiB, 1);
    const cp = await d.changedBlockTracking.createCheckpoint(v.id);
    resize(d, v.id, 4 * MiB); // [4, 8) MiB is cut: its data is gone, and its bits with it

    const s = await d.createSnapshot(v.id); // closed: a copy, judged from the copied bitmaps
    expect(s.size).toBe(4 * MiB);
    expect(await changed(d, { kind: 'snapshot', id: s.id }, cp.id)).toBe('NOT_FOUND');
    expect(await changed(d, { kind: 'volume', id: v.id }, cp.id)).toBe('NOT_FOUND');
  });
});
