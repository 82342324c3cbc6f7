import { execFileSync, spawnSync } from 'node:child_process';
import { stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, freshDriver, has, missingQemu, pattern, qemuImg } from './helpers.js';

// qemu-img check lets a qcow2 file end up to one cluster short of image-end-offset. When what
// was cut is an L2 table (the last cluster), check counts no corruption — the data clusters it
// mapped are mere leaks to it — and qemu reads the cut entries as unallocated: the volume's data
// there would be served, backed up and copied as zeros. The driver walks the image's metadata
// (assertQcow2MetadataWithinFile of @cairn/core) before it opens or copies it: CORRUPT.

const G = 64 * 1024;
const AT = 500 * MiB; // entry 8000 of the first L2 table's 8192: in its last 4 KiB
const missing = [...missingQemu, ...(has('qemu-io') ? [] : ['qemu-io'])];
const drivers: Qcow2VolumeDriver[] = [];
afterAll(async () => {
  for (const d of drivers) await disposeDriver(d).catch(() => {});
});

const errorOf = (p: Promise<unknown>): Promise<{ code?: string; message?: string; details?: Record<string, unknown> } | undefined> =>
  p.then(
    () => undefined,
    (err: { code?: string }) => err,
  );

describe.skipIf(missing.length > 0)(`an image cut through its last L2 table (needs ${missing.join(', ') || 'qemu'})`, () => {
  it('attaches (ro and rw) and snapshots are CORRUPT naming the L2 table, where qemu-img check counts a leak only; the whole image serves its data', async () => {
    const d = await freshDriver();
    drivers.push(d);
    const v = await d.createVolume({ size: 1024 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(AT, pattern(G, 5));
    await d.detach(a.id);
    const image = join(d.directory, 'volumes', `${v.id}.qcow2`);
    // A snapshot shares the L2 table; a zero write then copies it into a new last cluster (no
    // data cluster after it); deleting the snapshot frees the old table.
    qemuImg(['snapshot', '-c', 's1', image]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -z 0 64k', image], { stdio: 'ignore' });
    qemuImg(['snapshot', '-d', 's1', image]);

    const whole = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    expect(Buffer.compare(await whole.device.read(AT, G), pattern(G, 5))).toBe(0);
    await d.detach(whole.id);

    const size = (await stat(image)).size;
    await truncate(image, size - 4096);
    expect(spawnSync('qemu-img', ['check', image]).status).toBe(3); // leaks only, which the driver accepts
    for (const mode of ['ro', 'rw'] as const) {
      const attached = d.attach({ kind: 'volume', id: v.id }, mode);
      const served = attached.then(async (r) => r.device.read(AT, G)).catch(() => undefined);
      const err = await errorOf(attached);
      expect(err?.code).toBe('CORRUPT');
      expect(err?.message).toContain(image);
      expect(err?.details).toMatchObject({ structure: 'L2 table', file: image, fileSize: size - 4096, offset: size - G, end: size });
      expect(await served).toBeUndefined();
    }
    expect((await errorOf(d.createSnapshot(v.id)))?.code).toBe('CORRUPT');
    expect(await d.listSnapshots(v.id)).toEqual([]);
    expect((await stat(image)).size).toBe(size - 4096);
  });
});
