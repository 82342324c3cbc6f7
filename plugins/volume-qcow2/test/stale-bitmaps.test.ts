import { execFileSync } from 'node:child_process';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Extent } from '@cairn/core';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, has, missingQemu, pattern, qemuImg, readSidecar, tempDir } from './helpers.js';

// A program that knows no persistent bitmaps writes a qcow2 v3 image and clears its autoclear
// bits (docs/interop/qcow2.txt), bit 0 among them ("bitmaps extension consistent"): its writes
// are in no bitmap. qemu then ignores the bitmaps (and drops the extension when it opens the
// image read-write). The checkpoints those bitmaps held must not be trusted: the next
// extents(changed) since them is NOT_FOUND (the caller reads everything), never an answer that
// misses the writes. The image is written outside the driver while it is closed (the driver is
// closed, and a new one opens the directory).

const G = 64 * 1024;
const missing = [...missingQemu, ...(has('qemu-io') ? [] : ['qemu-io'])];
const dirs: string[] = [];
const drivers: Qcow2VolumeDriver[] = [];

afterAll(async () => {
  for (const d of drivers) await d.close().catch(() => {});
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

function driverOn(directory: string): Qcow2VolumeDriver {
  if (!dirs.includes(directory)) dirs.push(directory);
  const d = new Qcow2VolumeDriver({ directory });
  drivers.push(d);
  return d;
}

async function changed(d: Qcow2VolumeDriver, target: { kind: 'volume' | 'snapshot'; id: string }, since: string): Promise<Extent[] | string> {
  const a = await d.attach(target, 'ro');
  try {
    return await a.device.extents({ kind: 'changed', since }).catch((e: { code?: string }) => String(e.code));
  } finally {
    await d.detach(a.id);
  }
}

/** Clears the header's autoclear bit 0 (byte 95: the low byte of the big-endian u64 at 88), as a writer that knows no bitmaps does. */
async function clearBitmapsConsistent(image: string): Promise<void> {
  const fh = await open(image, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 95);
    expect(b[0]! & 1).toBe(1);
    b[0]! &= ~1;
    await fh.write(b, 0, 1, 95);
  } finally {
    await fh.close();
  }
}

/** Writes `bytes` into the host cluster of the image's allocated guest cluster at `guest`, in place (no qemu: no bitmap sees it). */
async function writeInPlace(image: string, guest: number, bytes: Buffer): Promise<void> {
  const map = JSON.parse(qemuImg(['map', '--output=json', '-f', 'qcow2', image]).stdout) as Array<{ start: number; length: number; data: boolean; offset?: number }>;
  const extent = map.find((e) => e.data && e.offset !== undefined && e.start <= guest && guest < e.start + e.length)!;
  const fh = await open(image, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, extent.offset! + (guest - extent.start));
  } finally {
    await fh.close();
  }
}

describe.skipIf(missing.length > 0)(`bitmaps a program that knows none left stale (autoclear bit 0 unset; needs ${missing.join(', ') || 'qemu'})`, () => {
  for (const how of ['in place (the header bit cleared, the extension left)', 'by qemu-io after the bit was cleared (qemu drops the extension)'] as const) {
    it(`data written ${how}: the snapshot copy and the volume answer NOT_FOUND since the older checkpoint; a new checkpoint tracks again`, async () => {
      const directory = await tempDir();
      const d = driverOn(directory);
      const v = await d.createVolume({ size: 8 * MiB });
      const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
      await a.device.write(0, pattern(8 * MiB, 1));
      await d.detach(a.id);
      const cp = await d.changedBlockTracking.createCheckpoint(v.id);
      expect(await changed(d, { kind: 'volume', id: v.id }, cp.id)).toEqual([]);
      await d.close();

      const image = join(directory, 'volumes', `${v.id}.qcow2`);
      await clearBitmapsConsistent(image);
      if (how.startsWith('in place')) await writeInPlace(image, 3 * MiB, pattern(4096, 2));
      else execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 9 ${3 * MiB} 4k`, image], { stdio: 'ignore' });

      const d2 = driverOn(directory);
      const s = await d2.createSnapshot(v.id); // closed: a copy, judged from the bitmaps convert copies
      expect(await changed(d2, { kind: 'snapshot', id: s.id }, cp.id)).toBe('NOT_FOUND');
      expect(await changed(d2, { kind: 'volume', id: v.id }, cp.id)).toBe('NOT_FOUND');
      expect((await readSidecar(d2, v.id)).checkpoints.map((c) => c.consistent)).toEqual([false]);

      const cp2 = await d2.changedBlockTracking.createCheckpoint(v.id);
      const b = await d2.attach({ kind: 'volume', id: v.id }, 'rw');
      await b.device.write(5 * MiB, pattern(100, 3));
      await d2.detach(b.id);
      expect(await changed(d2, { kind: 'volume', id: v.id }, cp2.id)).toEqual([{ offset: 5 * MiB, length: G }]);
      await d2.close();
      const d3 = driverOn(directory); // reopened: the bitmap qemu wrote back is trusted again
      expect(await changed(d3, { kind: 'volume', id: v.id }, cp2.id)).toEqual([{ offset: 5 * MiB, length: G }]);
      expect(await changed(d3, { kind: 'volume', id: v.id }, cp.id)).toBe('NOT_FOUND');
    });
  }
});
