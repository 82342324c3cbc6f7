import { rm } from 'node:fs/promises';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Attachment, Volume } from '@cairn/core';
import type { Qcow2VolumeDriver } from '../src/index.js';
import { driverPair, MiB, missingQemu, pattern } from './helpers.js';
import { writeInPlace } from './outside-write.js';

// A volume is stamped from its creation (volume-stamp.ts), so a plain write to its image made
// after its driver's daemon went away before any close saved a stamp (a crash: the daemon's
// SIGTERM makes it quit cleanly, bitmaps written, no stamp saved) is caught at the next open.

const G = 64 * 1024;

/** Ends `d`'s daemon as the death of the driver's process would (SIGTERM: a clean quit, no stamp saved), then overwrites guest offset `at` in the image file. */
async function crashThenWrite(d: Qcow2VolumeDriver, volumeId: string, at: number, seed: number): Promise<void> {
  const pid = (await d.daemonPid())!;
  process.kill(pid, 'SIGTERM');
  while ((await d.daemonPid()) !== undefined) await new Promise((r) => setTimeout(r, 20));
  await writeInPlace(`${d.directory}/volumes/${volumeId}.qcow2`, at, pattern(G, seed));
}

const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(missingQemu.length > 0)('image stamp saved at create', () => {
  // Each test: instance `a` (which crashes) attached read-write to a new volume with data at 2 MiB;
  // instance `b` on the same directory (another process) opens the volume afterwards.
  let a: Qcow2VolumeDriver;
  let b: Qcow2VolumeDriver;
  let v: Volume;
  let att: Attachment;

  beforeEach(async () => {
    [a, b] = await driverPair(dirs);
    v = await a.createVolume({ size: 8 * MiB });
    att = await a.attach({ kind: 'volume', id: v.id }, 'rw');
    await att.device.write(2 * MiB, pattern(G, 1));
    await att.device.flush();
  });

  afterEach(async () => {
    await a.close().catch(() => {});
    await b.close();
  });

  it('a plain write after a crash before the first close makes the checkpoint not consistent', async () => {
    const cp = await a.changedBlockTracking.createCheckpoint(v.id); // the node stays open: attached
    await crashThenWrite(a, v.id, 2 * MiB, 9);

    const r = await b.attach({ kind: 'volume', id: v.id }, 'ro');
    expect(Buffer.from(await r.device.read(2 * MiB, G)).equals(pattern(G, 9))).toBe(true);
    await expect(r.device.extents({ kind: 'changed', since: cp.id }, { offset: 0, length: 8 * MiB })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await b.detach(r.id);
  });

  it('after a mismatch, a checkpoint made before the next close is not trusted after a crash and a plain write', async () => {
    await a.detach(att.id); // closed: stamped
    await writeInPlace(`${a.directory}/volumes/${v.id}.qcow2`, 2 * MiB, pattern(G, 5)); // outside write: the next open mismatches
    await a.attach({ kind: 'volume', id: v.id }, 'rw'); // the open finds the mismatch
    const cp = await a.changedBlockTracking.createCheckpoint(v.id); // made after the mismatch, node still open
    await crashThenWrite(a, v.id, 2 * MiB, 9);

    const r = await b.attach({ kind: 'volume', id: v.id }, 'ro');
    await expect(r.device.extents({ kind: 'changed', since: cp.id }, { offset: 0, length: 8 * MiB })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await b.detach(r.id);
  });
});
