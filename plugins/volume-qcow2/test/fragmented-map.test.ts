import { execFileSync } from 'node:child_process';
import { copyFile, open, rm, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuImg } from '../src/qemu-img.js';
import { Qcow2VolumeDriver } from '../src/index.js';
import { disposeDriver, freshDriver, missingQemu, qemuImg, tempDir } from './helpers.js';

// When an image's file ends short of image-end-offset (always so once it has a checkpoint: the
// bitmaps are written last), the driver reads `qemu-img map` to see that no data cluster was cut.
// The map has an entry per extent: on a fragmented image it runs to tens of MiB (about 107 bytes
// an entry), and the whole report was kept, so that past 16 MiB the run was killed and a whole
// image failed every attach with INTERNAL. The report is now read as it comes, entry by entry.
// The image here has 512-byte clusters, so that 85 000 extents (a map of about 18 MiB) take
// 40 MiB and a few seconds to make; one of 64 KiB clusters gets there with ~80 000 extents.

const EXTENTS = 85_000;
const STEP = 4096; // 512 bytes of data every 4 KiB: a data entry and a hole entry each
const DATA = 512;
const bounds = { timeoutMs: 120_000, stallMs: 120_000 };
const drivers: Qcow2VolumeDriver[] = [];
let dir: string;
/** The fragmented image, closed, ending at its image-end-offset with a data cluster. */
let image: string;

const byte = (i: number) => (i * 7 + 1) & 0xff;

beforeAll(async () => {
  if (missingQemu.length > 0) return;
  dir = await tempDir('cairn-qcow2-frag-');
  const raw = join(dir, 'frag.raw');
  const fh = await open(raw, 'w');
  for (let i = 0; i < EXTENTS; i++) await fh.write(Buffer.alloc(DATA, byte(i)), 0, DATA, i * STEP);
  await fh.truncate(EXTENTS * STEP);
  await fh.close();
  image = join(dir, 'frag.qcow2');
  execFileSync('qemu-img', ['convert', '-t', 'unsafe', '-W', '-S', String(DATA), '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${DATA}`, raw, image]);
  await rm(raw);
  const map = execFileSync('qemu-img', ['map', '--output=json', image], { maxBuffer: 256 * 1024 * 1024 });
  expect(map.length).toBeGreaterThan(16 * 1024 * 1024); // more than runBounded keeps of a stream
}, 120_000);

afterAll(async () => {
  for (const d of drivers) await disposeDriver(d).catch(() => {});
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A copy of the fragmented image with a bitmap: its file ends inside its last cluster, legitimately. */
async function withBitmap(name: string): Promise<string> {
  const copy = join(dir, name);
  await copyFile(image, copy);
  execFileSync('qemu-img', ['bitmap', '--add', copy, 'b1']);
  const end = Number(JSON.parse(qemuImg(['check', '--output=json', copy]).stdout)['image-end-offset']);
  expect((await stat(copy)).size).toBeLessThan(end); // the map is consulted
  return copy;
}

describe.skipIf(missingQemu.length > 0)(`a fragmented image whose qemu-img map is over 16 MiB (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('is whole to QemuImg.assertWhole when it ends short of its last cluster legitimately (a bitmap written last)', async () => {
    const copy = await withBitmap('bitmap.qcow2');
    await expect(new QemuImg('qemu-img', 'qcow2', bounds).assertWhole(copy)).resolves.toBeUndefined();
  }, 60_000);

  it('is CORRUPT to QemuImg.assertWhole when its last data cluster is cut 256 bytes short', async () => {
    const cut = join(dir, 'cut.qcow2');
    await copyFile(image, cut);
    const size = (await stat(cut)).size;
    await truncate(cut, size - 256);
    expect(qemuImg(['check', cut]).status).toBe(0); // qemu's own check passes it
    await expect(new QemuImg('qemu-img', 'qcow2', bounds).assertWhole(cut)).rejects.toMatchObject({ code: 'CORRUPT', details: { fileSize: size - 256, dataEnd: size } });
  }, 60_000);

  it('attaches as a volume and serves its data', async () => {
    const d = await freshDriver();
    drivers.push(d);
    const v = await d.createVolume({ size: EXTENTS * STEP });
    await copyFile(await withBitmap('volume.qcow2'), join(d.directory, 'volumes', `${v.id}.qcow2`));
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    for (const i of [0, 1, EXTENTS >> 1, EXTENTS - 1]) {
      expect(await a.device.read(i * STEP, DATA)).toEqual(Buffer.alloc(DATA, byte(i)));
      expect(await a.device.read(i * STEP + DATA, 16)).toEqual(Buffer.alloc(16));
    }
    await d.detach(a.id);
  }, 60_000);
});
