import { execFileSync, spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, has, missingQemu, pattern, qemuImg, readSidecar } from './helpers.js';
import { hostOffset } from './outside-write.js';
import { driversOn } from './drivers-on.js';
import { changedSince as changed, writeVolume as write } from './volume-io.js';

/*
 * Writes to a volume's image made while Cairn has it detached. qemu programs (qemu-io,
 * qemu-img convert -n / commit, qemu-nbd) load the persistent bitmaps and mark what they write,
 * but a plain write to the file (a data cluster overwritten in place) changes no bitmap: the
 * image stamp (inode, size, mtime, ctime saved when the driver closes the image) is what catches it.
 */

const SIZE = 8 * MiB;
const G = 64 * 1024;
const driverOn = driversOn();

async function read(driver: Qcow2VolumeDriver, volumeId: string, at: number, length: number): Promise<Buffer> {
  const a = await driver.attach({ kind: 'volume', id: volumeId }, 'ro');
  try {
    return Buffer.from(await a.device.read(at, length));
  } finally {
    await driver.detach(a.id);
  }
}

const image = (d: Qcow2VolumeDriver, id: string): string => `${d.directory}/volumes/${id}.qcow2`;

/** A volume with data everywhere, a checkpoint made while detached, and one write after it through the driver. */
async function volumeWithCheckpoint(d: Qcow2VolumeDriver): Promise<{ id: string; cp: string }> {
  const v = await d.createVolume({ size: SIZE });
  await write(d, v.id, 0, pattern(SIZE, 1));
  const cp = await d.changedBlockTracking.createCheckpoint(v.id);
  await write(d, v.id, MiB, pattern(G, 2));
  expect(await changed(d, { kind: 'volume', id: v.id }, cp.id)).toEqual([{ offset: MiB, length: G }]);
  return { id: v.id, cp: cp.id };
}

describe.skipIf(missingQemu.length > 0)(`writes to a detached volume's image outside the driver (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a data cluster overwritten in place in the file: extents(changed) since the checkpoint is NOT_FOUND (volume and snapshot copy); a new checkpoint tracks again', async () => {
    const d = await driverOn();
    const { id, cp } = await volumeWithCheckpoint(d);
    const at = 5 * MiB;
    const fh = await open(image(d, id), 'r+');
    await fh.write(pattern(G, 9), 0, G, hostOffset(image(d, id), at));
    await fh.close();
    expect((await read(d, id, at, G)).equals(pattern(G, 9))).toBe(true); // qemu serves the raw write
    const copy = await d.createSnapshot(id);
    await expect(changed(d, { kind: 'snapshot', id: copy.id }, cp)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(changed(d, { kind: 'volume', id }, cp)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await readSidecar(d, id)).checkpoints.map((c) => c.consistent)).toEqual([false]);
    await d.deleteSnapshot(copy.id);
    const fresh = await d.changedBlockTracking.createCheckpoint(id);
    await write(d, id, 2 * MiB, pattern(512, 3));
    expect(await changed(d, { kind: 'volume', id }, fresh.id)).toEqual([{ offset: 2 * MiB, length: G }]);
    await d.close();
    // The stamp saved at the last close matches what a new instance (a restart) finds.
    const d2 = await driverOn(d.directory);
    expect(await changed(d2, { kind: 'volume', id }, fresh.id)).toEqual([{ offset: 2 * MiB, length: G }]);
    await d2.close();
  });

  it('a data cluster overwritten in place, then a checkpoint: the older checkpoint is NOT_FOUND, the new one tracks', async () => {
    const d = await driverOn();
    const { id, cp } = await volumeWithCheckpoint(d);
    const fh = await open(image(d, id), 'r+');
    await fh.write(pattern(G, 9), 0, G, hostOffset(image(d, id), 6 * MiB));
    await fh.close();
    const next = await d.changedBlockTracking.createCheckpoint(id);
    await expect(changed(d, { kind: 'volume', id }, cp)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await write(d, id, 0, pattern(512, 4));
    expect(await changed(d, { kind: 'volume', id }, next.id)).toEqual([{ offset: 0, length: G }]);
    await d.close();
  });

  it.skipIf(!has('qemu-io'))('a qemu-io write while detached (which qemu marks in the bitmap too): the checkpoint is NOT_FOUND, the stamp changed', async () => {
    const d = await driverOn();
    const { id, cp } = await volumeWithCheckpoint(d);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 7 ${3 * MiB} ${G}`, image(d, id)], { stdio: 'ignore' });
    await expect(changed(d, { kind: 'volume', id }, cp)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await d.close();
  });

  it.skipIf(!has('qemu-io'))('a qemu-io killed with SIGKILL after writing leaves the bitmap in-use: NOT_FOUND', async () => {
    const d = await driverOn();
    const { id, cp } = await volumeWithCheckpoint(d);
    const child = spawn('qemu-io', ['-f', 'qcow2', '-c', `write -P 7 ${3 * MiB} ${G}`, '-c', 'sleep 60000', image(d, id)], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    // Wait until the write has landed: the file holds the pattern at the cluster's host offset.
    for (let i = 0; i < 200; i++) {
      const fh = await open(image(d, id), 'r');
      const buf = Buffer.alloc(G);
      const at = (() => {
        try {
          return hostOffset(image(d, id), 3 * MiB);
        } catch {
          return -1;
        }
      })();
      if (at >= 0) await fh.read(buf, 0, G, at);
      await fh.close();
      if (buf.every((b) => b === 7)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    await exited;
    const info = JSON.parse(qemuImg(['info', '-U', '--output=json', image(d, id)]).stdout);
    expect(info['format-specific'].data.bitmaps[0].flags).toContain('in-use');
    await expect(changed(d, { kind: 'volume', id }, cp)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await d.close();
  });

  it('qemu-img snapshot -a (revert to an internal snapshot) is refused by qemu while the image has a bitmap; the checkpoint still never under-reports', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: SIZE });
    await write(d, v.id, 0, pattern(SIZE, 1));
    expect(qemuImg(['snapshot', '-c', 'before', image(d, v.id)]).status).toBe(0);
    const cp = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, 4 * MiB, pattern(G, 5));
    const revert = qemuImg(['snapshot', '-a', 'before', image(d, v.id)]);
    expect(revert.status).not.toBe(0);
    expect(revert.stderr).toMatch(/active dirty bitmaps/);
    expect((await read(d, v.id, 4 * MiB, G)).equals(pattern(G, 5))).toBe(true); // not reverted
    const got = await changed(d, { kind: 'volume', id: v.id }, cp.id).catch((err: { code?: string }) => err.code);
    if (got !== 'NOT_FOUND') expect(got).toEqual([{ offset: 4 * MiB, length: G }]);
    await d.close();
  });

  it('two checkpoints, the older deleted: changes since the newer are still exact, also after a restart', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: SIZE });
    await write(d, v.id, 0, pattern(SIZE, 1));
    const older = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, 0, pattern(G, 2));
    const newer = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, 2 * MiB, pattern(G, 3));
    await d.changedBlockTracking.deleteCheckpoint(v.id, older.id);
    expect(await changed(d, { kind: 'volume', id: v.id }, newer.id)).toEqual([{ offset: 2 * MiB, length: G }]);
    await write(d, v.id, 3 * MiB, pattern(G, 4));
    await d.close();
    const d2 = await driverOn(d.directory);
    expect(await changed(d2, { kind: 'volume', id: v.id }, newer.id)).toEqual([{ offset: 2 * MiB, length: G }, { offset: 3 * MiB, length: G }]);
    await d2.close();
  });
  it('driver-made changes keep the stamp: after extendVolume the older checkpoint is NOT_FOUND and a new one tracks; a restore-like overwrite through an attachment is reported whole; both across a restart', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: SIZE });
    const cp = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, 0, pattern(SIZE, 1)); // what a restore into the volume does
    expect(await changed(d, { kind: 'volume', id: v.id }, cp.id)).toEqual([{ offset: 0, length: SIZE }]);
    await d.extendVolume(v.id, 2 * SIZE);
    await expect(changed(d, { kind: 'volume', id: v.id }, cp.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const after = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, SIZE + MiB, pattern(G, 2));
    await d.close();
    const d2 = await driverOn(d.directory);
    expect(await changed(d2, { kind: 'volume', id: v.id }, after.id)).toEqual([{ offset: SIZE + MiB, length: G }]);
    expect((await readSidecar(d2, v.id)).checkpoints.map((c) => c.consistent)).toEqual([false, true]);
    await d2.close();
  });
});
