import { open, rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, pattern, qemuImg, tempDir } from './helpers.js';

// A volume is stamped from its creation (volume-stamp.ts), so a plain write to its image made
// after its driver's daemon went away before any close saved a stamp (a crash: the daemon's
// SIGTERM makes it quit cleanly, bitmaps written, no stamp saved) is caught at the next open.

const G = 64 * 1024;

/** The host offset of the data cluster holding guest offset `at` (qemu-img map). */
function hostOffset(path: string, at: number): number {
  const map = JSON.parse(qemuImg(['map', '-U', '--output=json', '-f', 'qcow2', path]).stdout) as Array<{ start: number; length: number; data: boolean; offset?: number }>;
  const e = map.find((m) => m.data && m.start <= at && at < m.start + m.length && m.offset !== undefined);
  if (!e) throw new Error(`no data cluster at ${at}`);
  return e.offset! + (at - e.start);
}

/** Ends `d`'s daemon as the death of the driver's process would (SIGTERM: a clean quit, no stamp saved), then overwrites guest offset `at` in the image file. */
async function crashThenWrite(d: Qcow2VolumeDriver, volumeId: string, at: number, seed: number): Promise<void> {
  const pid = (await d.daemonPid())!;
  process.kill(pid, 'SIGTERM');
  while ((await d.daemonPid()) !== undefined) await new Promise((r) => setTimeout(r, 20));
  const image = `${d.directory}/volumes/${volumeId}.qcow2`;
  const fh = await open(image, 'r+');
  await fh.write(pattern(G, seed), 0, G, hostOffset(image, at));
  await fh.close();
}

describe.skipIf(missingQemu.length > 0)('image stamp saved at create', () => {
  it('a plain write after a crash before the first close makes the checkpoint not consistent', async () => {
    const directory = await tempDir();
    const a = new Qcow2VolumeDriver({ directory });
    const b = new Qcow2VolumeDriver({ directory });
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const att = await a.attach({ kind: 'volume', id: v.id }, 'rw');
      await att.device.write(2 * MiB, pattern(G, 1));
      await att.device.flush();
      const cp = await a.changedBlockTracking.createCheckpoint(v.id); // the node stays open: attached
      await crashThenWrite(a, v.id, 2 * MiB, 9);

      const r = await b.attach({ kind: 'volume', id: v.id }, 'ro');
      expect(Buffer.from(await r.device.read(2 * MiB, G)).equals(pattern(G, 9))).toBe(true);
      await expect(r.device.extents({ kind: 'changed', since: cp.id }, { offset: 0, length: 8 * MiB })).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await b.detach(r.id);
    } finally {
      await a.close().catch(() => {});
      await b.close();
      await rm(directory, { recursive: true, force: true });
    }
  });

  it('after a mismatch, a checkpoint made before the next close is not trusted after a crash and a plain write', async () => {
    const directory = await tempDir();
    const a = new Qcow2VolumeDriver({ directory });
    const b = new Qcow2VolumeDriver({ directory });
    try {
      const v = await a.createVolume({ size: 8 * MiB });
      const att = await a.attach({ kind: 'volume', id: v.id }, 'rw');
      await att.device.write(2 * MiB, pattern(G, 1));
      await a.detach(att.id); // closed: stamped
      const image = `${directory}/volumes/${v.id}.qcow2`;
      const fh = await open(image, 'r+');
      await fh.write(pattern(G, 5), 0, G, hostOffset(image, 2 * MiB)); // outside write: the next open mismatches
      await fh.close();
      await a.attach({ kind: 'volume', id: v.id }, 'rw'); // the open finds the mismatch
      const cp = await a.changedBlockTracking.createCheckpoint(v.id); // made after the mismatch, node still open
      await crashThenWrite(a, v.id, 2 * MiB, 9);

      const r = await b.attach({ kind: 'volume', id: v.id }, 'ro');
      await expect(r.device.extents({ kind: 'changed', since: cp.id }, { offset: 0, length: 8 * MiB })).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await b.detach(r.id);
    } finally {
      await a.close().catch(() => {});
      await b.close();
      await rm(directory, { recursive: true, force: true });
    }
  });
});
