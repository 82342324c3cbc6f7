import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, freshDriver, missingQemu, qemuImg, tempDir } from './helpers.js';

const SIZE = 4 * MiB;
const drivers: Qcow2VolumeDriver[] = [];
const dirs: string[] = [];

afterAll(async () => {
  for (const d of drivers) await disposeDriver(d).catch(() => {});
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** A driver with one volume, and a file outside its directory full of 0x53 ("secret"). */
async function setup(): Promise<{ d: Qcow2VolumeDriver; volumeId: string; image: string; secret: string }> {
  const d = await freshDriver();
  drivers.push(d);
  const v = await d.createVolume({ size: SIZE });
  const outside = await tempDir('cairn-qcow2-outside-');
  dirs.push(outside);
  const secret = join(outside, 'secret.raw');
  await writeFile(secret, Buffer.alloc(SIZE, 0x53));
  return { d, volumeId: v.id, image: join(d.directory, 'volumes', `${v.id}.qcow2`), secret };
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (err: { code?: string }) => err.code,
  );
}

describe.skipIf(missingQemu.length > 0)(`images that name another file (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a volume image given a backing file outside the directory (qemu-img rebase -u) is CORRUPT to attach and to snapshot, and the other file is never served', async () => {
    const { d, volumeId, image, secret } = await setup();
    expect(qemuImg(['rebase', '-u', '-f', 'qcow2', '-b', secret, '-F', 'raw', image]).status).toBe(0);

    for (const mode of ['ro', 'rw'] as const) {
      const attached = d.attach({ kind: 'volume', id: volumeId }, mode);
      const served = attached.then(async (a) => a.device.read(0, 16)).catch(() => undefined);
      expect(await codeOf(attached)).toBe('CORRUPT');
      expect(await served).toBeUndefined();
    }
    // The image is closed: a snapshot is a copy, which would read the backing file through.
    expect(await codeOf(d.createSnapshot(volumeId))).toBe('CORRUPT');
    expect(await d.listSnapshots(volumeId)).toEqual([]);
    expect(await codeOf(d.changedBlockTracking.createCheckpoint(volumeId))).toBe('CORRUPT');
    expect(await d.changedBlockTracking.listCheckpoints(volumeId)).toEqual([]);
  });

  it('a volume image whose data lives in an external data file outside the directory is CORRUPT to attach and to snapshot', async () => {
    const { d, volumeId, image, secret } = await setup();
    await rm(image);
    const made = qemuImg(['create', '-q', '-f', 'qcow2', '-o', `data_file=${secret},data_file_raw=on`, image, String(SIZE)]);
    expect(made.status, made.stderr).toBe(0);

    const attached = d.attach({ kind: 'volume', id: volumeId }, 'ro');
    const served = attached.then(async (a) => a.device.read(0, 16)).catch(() => undefined);
    expect(await codeOf(attached)).toBe('CORRUPT');
    expect(await served).toBeUndefined();
    expect(await codeOf(d.createSnapshot(volumeId))).toBe('CORRUPT');
    expect(await d.listSnapshots(volumeId)).toEqual([]);
  });

  it('a snapshot copy given a backing file outside the directory is CORRUPT to attach', async () => {
    const { d, volumeId, secret } = await setup();
    const s = await d.createSnapshot(volumeId); // closed volume: a copy
    const copy = join(d.directory, 'snapshots', `${s.id}.qcow2`);
    expect(qemuImg(['rebase', '-u', '-f', 'qcow2', '-b', secret, '-F', 'raw', copy]).status).toBe(0);
    const attached = d.attach({ kind: 'snapshot', id: s.id }, 'ro');
    const served = attached.then(async (a) => a.device.read(0, 16)).catch(() => undefined);
    expect(await codeOf(attached)).toBe('CORRUPT');
    expect(await served).toBeUndefined();
  });
});
