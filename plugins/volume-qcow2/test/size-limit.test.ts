import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_VOLUME_SIZE, qcow2MaxSize } from '../src/size-limit.js';
import { MiB, missingQemu, pattern, qemuImg, readSidecar } from './helpers.js';
import { driversOn } from './drivers-on.js';
import { changedSince as changed, writeVolume as write } from './volume-io.js';

/*
 * qcow2's size limit (size-limit.ts): qemu refuses a larger image at create and at block_resize.
 * The driver refuses such a size itself, INVALID_INPUT before anything is made or changed: an
 * extend refused by qemu only after growImage had dropped every checkpoint cost the next backup
 * its incremental for nothing.
 */

const G = 64 * 1024;
const driverOn = driversOn();

describe('qcow2MaxSize', () => {
  it('is qemu 7.2\'s limit: 2^22 L1 entries, each mapping cluster/8 clusters (cluster/16 with extended L2)', () => {
    expect(MAX_VOLUME_SIZE).toBe(2 ** 51);
    expect(qcow2MaxSize(9)).toBe(2 ** 37);
    expect(qcow2MaxSize(12)).toBe(2 ** 43);
    expect(qcow2MaxSize(16, true)).toBe(2 ** 50);
  });
});

describe.skipIf(missingQemu.length > 0)(`sizes past qcow2's limit (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('createVolume one sector past 2^51 is INVALID_INPUT naming the limit, and leaves no file; 2^51 itself is made', async () => {
    const d = await driverOn();
    await expect(d.createVolume({ size: 2 ** 51 + 512 })).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { size: 2 ** 51 + 512, maxSize: 2 ** 51 } });
    const files = await readdir(join(d.directory, 'volumes')).catch(() => [] as string[]);
    expect(files.filter((f) => !f.startsWith('.'))).toEqual([]);
    const v = await d.createVolume({ size: 2 ** 51 });
    expect(v.size).toBe(2 ** 51);
    await d.deleteVolume(v.id);
    await d.close();
  });

  it('extendVolume one sector past 2^51 is INVALID_INPUT and keeps the checkpoint, its bitmap and its answer', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: 8 * MiB });
    await write(d, v.id, 0, pattern(MiB, 1));
    const cp = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, 2 * MiB, pattern(1000, 2));
    await expect(d.extendVolume(v.id, 2 ** 51 + 512)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { maxSize: 2 ** 51 } });
    expect((await readSidecar(d, v.id)).checkpoints.map((c) => c.consistent)).toEqual([true]);
    expect(qemuImg(['info', '-U', join(d.directory, 'volumes', `${v.id}.qcow2`)]).stdout).toContain(cp.id);
    expect(await changed(d, { kind: 'volume', id: v.id }, cp.id)).toEqual([{ offset: 2 * MiB, length: G }]);
    expect((await d.getVolume(v.id)).size).toBe(8 * MiB);
    await d.close();
  });

  it('an image of 4 KiB clusters made outside the driver: its limit (2^43) is the one enforced, before the checkpoint is touched', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: 8 * MiB });
    const image = join(d.directory, 'volumes', `${v.id}.qcow2`);
    await rm(image);
    expect(qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', image, String(8 * MiB)]).status).toBe(0);
    const cp = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, 0, pattern(4096, 3));
    await expect(d.extendVolume(v.id, 2 ** 43 + 512)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { maxSize: 2 ** 43 } });
    expect((await readSidecar(d, v.id)).checkpoints.map((c) => c.consistent)).toEqual([true]);
    expect(await changed(d, { kind: 'volume', id: v.id }, cp.id)).toEqual([{ offset: 0, length: G }]);
    expect((await d.extendVolume(v.id, 2 ** 43)).size).toBe(2 ** 43);
    await d.close();
  });
});
