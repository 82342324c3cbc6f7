import { open, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, freshDriver, missingQemu, qemuImg } from './helpers.js';

const drivers: Qcow2VolumeDriver[] = [];
afterAll(async () => {
  for (const d of drivers) await disposeDriver(d).catch(() => {});
});

async function poke(path: string, at: number, bytes: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, at);
  } finally {
    await fh.close();
  }
}
const u64 = (v: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};
const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (err: { code?: string }) => err.code,
  );
}

/** Header damage qemu refuses to open the image for (qcow2 spec header fields). */
const damage: Array<[string, (image: string) => Promise<void>]> = [
  ['an L1 table offset that is not cluster-aligned', (p) => poke(p, 40, u64(0x12345n))],
  ['a refcount table offset that is not cluster-aligned', (p) => poke(p, 48, u64(0x123n))],
  ['an unknown qcow2 version', (p) => poke(p, 4, u32(9))],
  ['an invalid cluster size', (p) => poke(p, 20, u32(40))],
  ['a file cut inside the header', (p) => truncate(p, 50)],
  ['an empty file', (p) => truncate(p, 0)],
];

describe.skipIf(missingQemu.length > 0)(`a damaged image header (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it.each(damage)('%s: qemu-img check fails, and attach, snapshot, checkpoint and extend fail with CORRUPT, changing nothing', async (_what, spoil) => {
    const d = await freshDriver();
    drivers.push(d);
    const v = await d.createVolume({ size: 4 * MiB });
    const image = join(d.directory, 'volumes', `${v.id}.qcow2`);
    await spoil(image);
    expect(qemuImg(['check', image]).status).not.toBe(0);

    expect(await codeOf(d.attach({ kind: 'volume', id: v.id }, 'ro'))).toBe('CORRUPT');
    expect(await codeOf(d.attach({ kind: 'volume', id: v.id }, 'rw'))).toBe('CORRUPT');
    expect(await codeOf(d.createSnapshot(v.id))).toBe('CORRUPT');
    expect(await codeOf(d.changedBlockTracking.createCheckpoint(v.id))).toBe('CORRUPT');
    expect(await codeOf(d.extendVolume(v.id, 8 * MiB))).toBe('CORRUPT');
    expect(await d.listSnapshots(v.id)).toEqual([]);
    expect(await d.changedBlockTracking.listCheckpoints(v.id)).toEqual([]);
    await d.deleteVolume(v.id); // a damaged volume can still be deleted
    await expect(d.getVolume(v.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await rm(image, { force: true });
  });

  it('an image qemu marked corrupt (incompatible feature bit 1): a snapshot copy is CORRUPT to attach read-only, which qemu allows, and the volume CORRUPT to copy', async () => {
    const d = await freshDriver();
    drivers.push(d);
    const v = await d.createVolume({ size: 4 * MiB });
    const s = await d.createSnapshot(v.id); // closed: a copy
    const markCorrupt = async (path: string): Promise<void> => {
      const fh = await open(path, 'r+');
      try {
        const features = Buffer.alloc(8);
        await fh.read(features, 0, 8, 72);
        features[7]! |= 0x02;
        await fh.write(features, 0, 8, 72);
      } finally {
        await fh.close();
      }
    };
    await markCorrupt(join(d.directory, 'snapshots', `${s.id}.qcow2`));
    expect(await codeOf(d.attach({ kind: 'snapshot', id: s.id }, 'ro'))).toBe('CORRUPT');
    await markCorrupt(join(d.directory, 'volumes', `${v.id}.qcow2`));
    expect(await codeOf(d.createSnapshot(v.id))).toBe('CORRUPT');
    expect((await d.listSnapshots(v.id)).map((x) => x.id)).toEqual([s.id]);
  });
});
