import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { disposeDriver, freshDriver, MiB, missingQemu, pattern, qemuImg } from './helpers.js';

// An extendVolume that died between `block_resize` and its sidecar write leaves the image larger
// than its sidecar says. attach serves the image as it is (the device has the image's size, and
// extendVolume treats the larger size as the current one); a snapshot must hold that same volume,
// its size included, so a backup of it reads the tail too.

const SMALL = 8 * MiB;
const LARGE = 16 * MiB;
const TAIL = 12 * MiB;

describe.skipIf(missingQemu.length > 0)(`snapshots of a volume whose image is larger than its sidecar (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  let d: Qcow2VolumeDriver;
  let volumeId: string;
  beforeEach(async () => {
    d = await freshDriver();
    volumeId = (await d.createVolume({ size: SMALL })).id;
    const grown = qemuImg(['resize', '-q', '-f', 'qcow2', join(d.directory, 'volumes', `${volumeId}.qcow2`), String(LARGE)]);
    expect(grown.status, grown.stderr).toBe(0);
  });
  afterEach(async () => disposeDriver(d));

  /** Attaches the snapshot and returns its device size and the 4 KiB at TAIL (as a hex prefix). */
  async function readSnapshot(snapshotId: string): Promise<{ size: number; tail: string }> {
    const s = await d.attach({ kind: 'snapshot', id: snapshotId }, 'ro');
    try {
      const tail = s.device.size >= TAIL + 4096 ? Buffer.from(await s.device.read(TAIL, 4096)).toString('hex', 0, 16) : 'missing';
      return { size: s.device.size, tail };
    } finally {
      await d.detach(s.id);
    }
  }

  it('getVolume and listVolumes report the size attach serves, before, during and after an attachment', async () => {
    const reported = async (): Promise<number[]> => [(await d.getVolume(volumeId)).size, ...(await d.listVolumes()).map((v) => v.size)];
    expect(await reported()).toEqual([LARGE, LARGE]); // nothing opened the image yet
    const a = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    expect(a.device.size).toBe(LARGE);
    expect(await reported()).toEqual([LARGE, LARGE]); // this instance's daemon holds the image
    await d.detach(a.id);
    expect(await reported()).toEqual([LARGE, LARGE]);
    expect((await d.extendVolume(volumeId, LARGE)).size).toBe(LARGE); // the sidecar catches up
    expect(await reported()).toEqual([LARGE, LARGE]);
  });

  it('a snapshot copy (volume detached) has the size attach serves, and holds the data written past the sidecar\'s size', async () => {
    const a = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    expect(a.device.size).toBe(LARGE); // what attach does: the image as it is
    await a.device.write(TAIL, pattern(4096, 3));
    await d.detach(a.id);
    const snap = await d.createSnapshot(volumeId);
    expect(snap.size).toBe(LARGE);
    expect((await d.listSnapshots(volumeId)).map((s) => s.size)).toEqual([LARGE]);
    expect(await readSnapshot(snap.id)).toEqual({ size: LARGE, tail: pattern(4096, 3).toString('hex', 0, 16) });
  });

  it('a snapshot view (volume attached) is taken, has the size attach serves, and holds the data written past the sidecar\'s size', async () => {
    const a = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    await a.device.write(TAIL, pattern(4096, 4));
    const snap = await d.createSnapshot(volumeId);
    expect(snap.size).toBe(a.device.size);
    await a.device.write(TAIL, pattern(4096, 5)); // after the view: not in it
    expect(await readSnapshot(snap.id)).toEqual({ size: LARGE, tail: pattern(4096, 4).toString('hex', 0, 16) });
    await d.deleteSnapshot(snap.id);
    await d.detach(a.id);
  });
});
