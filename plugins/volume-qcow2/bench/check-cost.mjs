// Measures what the README reports under "Truncated images": the cost of the qemu-img check the
// driver runs before it opens an image, and of a whole attach (first open: check + blockdev-add
// + export + NBD connect), on an image of <GiB> GiB with half of it allocated (2 MiB runs every
// 4 MiB, written with qemu-io); then again once the volume has a checkpoint (its bitmap is written
// last, so the file ends inside its last cluster: the check adds a `qemu-img map`). Needs about GiB/2 of disk.
// Run after `npx tsc -b plugins/volume-qcow2`: node plugins/volume-qcow2/bench/check-cost.mjs [GiB]
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2VolumeDriver } from '../dist/index.js';
import { QemuImg } from '../dist/qemu-img.js';

const GiB = 1024 ** 3;
const size = Number(process.argv[2] ?? 8) * GiB;
const dir = await mkdtemp(join(tmpdir(), 'cairn-qcow2-bench-'));
const driver = new Qcow2VolumeDriver({ directory: dir });
const ms = async (fn) => {
  const t = process.hrtime.bigint();
  const r = await fn();
  return [Number(process.hrtime.bigint() - t) / 1e6, r];
};
const show = (what, xs) => console.log(`${what}: ${xs.map((x) => x.toFixed(1)).join(' ')} ms`);
try {
  const v = await driver.createVolume({ size });
  const image = join(dir, 'volumes', `${v.id}.qcow2`);
  const writes = [];
  for (let at = 0; at < size; at += 4 * 1024 ** 2) writes.push('-c', `write -q -P 0x5a ${at} 2M`);
  execFileSync('qemu-io', ['-f', 'qcow2', ...writes, image]);
  execFileSync('sync'); // measure the check, not the writeback of what was just written
  const qemuImg = new QemuImg('qemu-img', 'qcow2', { timeoutMs: 120_000, stallMs: 120_000 });
  const measure = async (label) => {
    const checks = [];
    for (let i = 0; i < 10; i++) checks.push((await ms(() => qemuImg.assertWhole(image)))[0]);
    show(`qemu-img check${label}`, checks);
    const attaches = [];
    for (let i = 0; i < 10; i++) {
      const [t, a] = await ms(() => driver.attach({ kind: 'volume', id: v.id }, 'ro'));
      attaches.push(t);
      await driver.detach(a.id);
    }
    show(`attach${label} (first open; the first one starts the daemon)`, attaches);
  };
  await measure('');
  await driver.changedBlockTracking.createCheckpoint(v.id); // its bitmap is written last, at the node's close
  execFileSync('sync');
  const end = JSON.parse(execFileSync('qemu-img', ['check', '--output=json', image]).toString())['image-end-offset'];
  console.log(`file ${statSync(image).size} bytes, image-end-offset ${end}: ${statSync(image).size < end ? 'the check maps' : 'no map'}`);
  await measure(' with a checkpoint (+ qemu-img map)');
} finally {
  await driver.close();
  await rm(dir, { recursive: true, force: true });
}
