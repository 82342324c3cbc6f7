import { stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, freshDriver, missingQemu, pattern, qemuImg } from './helpers.js';

// An image cut short (a full disk, an interrupted copy) still opens in qemu: clusters its tables
// point past the end of the file read as zeros, and a backup would store those zeros for the lost
// data. A cut through the bitmap directory (written last) made qemu refuse the image, reported as
// INVALID_INPUT. The driver checks the image (qemu-img check) before it opens or copies it:
// CORRUPT, nothing served, nothing changed.

const SIZE = 8 * MiB;
const G = 64 * 1024;
const drivers: Qcow2VolumeDriver[] = [];
afterAll(async () => {
  for (const d of drivers) await disposeDriver(d).catch(() => {});
});

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (err: { code?: string }) => err.code,
  );
}

/** A driver with a volume whose first 4 MiB hold data, written and detached (the image is closed). */
async function setup(): Promise<{ d: Qcow2VolumeDriver; volumeId: string; image: string }> {
  const d = await freshDriver();
  drivers.push(d);
  const v = await d.createVolume({ size: SIZE });
  const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
  await a.device.write(0, pattern(4 * MiB, 7));
  await d.detach(a.id);
  return { d, volumeId: v.id, image: join(d.directory, 'volumes', `${v.id}.qcow2`) };
}

describe.skipIf(missingQemu.length > 0)(`a truncated image (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a volume image cut through its data is CORRUPT to attach (ro and rw), snapshot, checkpoint and extend, and is not changed', async () => {
    const { d, volumeId, image } = await setup();
    await truncate(image, 2 * MiB); // about half of the data clusters are gone
    const before = (await stat(image)).size;

    for (const mode of ['ro', 'rw'] as const) {
      const attached = d.attach({ kind: 'volume', id: volumeId }, mode);
      const served = attached.then(async (a) => a.device.read(3 * MiB, 16)).catch(() => undefined);
      expect(await codeOf(attached)).toBe('CORRUPT');
      expect(await served).toBeUndefined();
    }
    expect(await codeOf(d.createSnapshot(volumeId))).toBe('CORRUPT');
    expect(await d.listSnapshots(volumeId)).toEqual([]);
    expect(await codeOf(d.changedBlockTracking.createCheckpoint(volumeId))).toBe('CORRUPT');
    expect(await d.changedBlockTracking.listCheckpoints(volumeId)).toEqual([]);
    expect(await codeOf(d.extendVolume(volumeId, 2 * SIZE))).toBe('CORRUPT');
    expect((await stat(image)).size).toBe(before);
    expect((await d.getVolume(volumeId)).size).toBe(SIZE);
    // Nothing of it stays open: the damaged volume can still be deleted.
    await d.deleteVolume(volumeId);
    expect(await d.listVolumes()).toEqual([]);
  });

  it('a snapshot copy cut through its data is CORRUPT to attach', async () => {
    const { d, volumeId } = await setup();
    const s = await d.createSnapshot(volumeId); // closed volume: a copy
    const copy = join(d.directory, 'snapshots', `${s.id}.qcow2`);
    await truncate(copy, 2 * MiB);
    const attached = d.attach({ kind: 'snapshot', id: s.id }, 'ro');
    const served = attached.then(async (a) => a.device.read(3 * MiB, 16)).catch(() => undefined);
    expect(await codeOf(attached)).toBe('CORRUPT');
    expect(await served).toBeUndefined();
  });

  it('an image cut through its bitmap directory (its last cluster) is CORRUPT, not INVALID_INPUT, and answers no "changed since" query', async () => {
    const { d, volumeId, image } = await setup();
    const cp = await d.changedBlockTracking.createCheckpoint(volumeId);
    const a = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    await a.device.write(6 * MiB, pattern(G, 8));
    await d.detach(a.id); // the node closes: the bitmap is written at the end of the file
    const size = (await stat(image)).size;
    await truncate(image, size - G);
    expect(qemuImg(['check', image]).status).not.toBe(0); // qemu's own check fails

    const attached = d.attach({ kind: 'volume', id: volumeId }, 'ro');
    const answer = attached.then(async (r) => r.device.extents({ kind: 'changed', since: cp.id })).catch(() => undefined);
    expect(await codeOf(attached)).toBe('CORRUPT');
    expect(await answer).toBeUndefined();
  });

  it('a volume image cut less than one cluster short (4 KiB off its last data cluster, which qemu-img check allows) is CORRUPT to attach and snapshot', async () => {
    const { d, volumeId, image } = await setup();
    const size = (await stat(image)).size;
    await truncate(image, size - 4096);
    expect(qemuImg(['check', image]).status).toBe(0); // qemu's own check passes: its reads serve the cut 4 KiB as zeros

    for (const mode of ['ro', 'rw'] as const) {
      const attached = d.attach({ kind: 'volume', id: volumeId }, mode);
      const served = attached.then(async (a) => a.device.read(4 * MiB - 4096, 4096)).catch(() => undefined);
      const err = await attached.then(
        () => undefined,
        (e: { code?: string; message?: string }) => e,
      );
      expect(err?.code).toBe('CORRUPT');
      expect(err?.message).toContain(image);
      expect(await served).toBeUndefined();
    }
    expect(await codeOf(d.createSnapshot(volumeId))).toBe('CORRUPT');
    expect(await d.listSnapshots(volumeId)).toEqual([]);
    expect((await stat(image)).size).toBe(size - 4096);
  });

  it('a snapshot copy cut 4 KiB short is CORRUPT to attach', async () => {
    const { d, volumeId } = await setup();
    const s = await d.createSnapshot(volumeId);
    const copy = join(d.directory, 'snapshots', `${s.id}.qcow2`);
    await truncate(copy, (await stat(copy)).size - 4096);
    expect(await codeOf(d.attach({ kind: 'snapshot', id: s.id }, 'ro'))).toBe('CORRUPT');
  });

  it('an image whose file ends inside its last cluster legitimately (bitmaps written last) still attaches and serves its data', async () => {
    const { d, volumeId, image } = await setup();
    await d.changedBlockTracking.createCheckpoint(volumeId);
    const a = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    await a.device.write(6 * MiB, pattern(G, 8));
    await d.detach(a.id);
    const end = Number(JSON.parse(qemuImg(['check', '--output=json', image]).stdout)['image-end-offset']);
    expect((await stat(image)).size).toBeLessThan(end); // the case the new check must not refuse
    const again = await d.attach({ kind: 'volume', id: volumeId }, 'ro');
    expect(Buffer.compare(await again.device.read(0, 4 * MiB), pattern(4 * MiB, 7))).toBe(0);
    expect(Buffer.compare(await again.device.read(6 * MiB, G), pattern(G, 8))).toBe(0);
    await d.detach(again.id);
  });

  it('a whole image still attaches after the checks, also after its daemon was killed (leaked clusters are not damage)', async () => {
    const { d, volumeId } = await setup();
    const a = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    await a.device.write(5 * MiB, pattern(MiB, 9));
    process.kill((await d.daemonPid())!, 'SIGKILL');
    await expect(a.device.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await d.detach(a.id);
    const again = await d.attach({ kind: 'volume', id: volumeId }, 'ro');
    expect(Buffer.compare(await again.device.read(0, 4 * MiB), pattern(4 * MiB, 7))).toBe(0);
    await d.detach(again.id);
  });
});
