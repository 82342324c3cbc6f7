// Measures what the README reports: snapshot by copy vs fleecing view vs an overlay (the rejected
// chain design), a changed-extents query, and sequential read through the NBD device.
// Run after `npx tsc -b plugins/volume-qcow2`: node plugins/volume-qcow2/bench/snapshot-costs.mjs [MiB]
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2VolumeDriver } from '../dist/index.js';

const MiB = 1024 * 1024;
const size = Number(process.argv[2] ?? 1024) * MiB;
const dir = await mkdtemp(join(tmpdir(), 'cairn-qcow2-bench-'));
const driver = new Qcow2VolumeDriver({ directory: dir });
const ms = async (fn) => {
  const t = process.hrtime.bigint();
  const r = await fn();
  return [Number(process.hrtime.bigint() - t) / 1e6, r];
};
try {
  const v = await driver.createVolume({ size });
  const cp = await driver.changedBlockTracking.createCheckpoint(v.id);
  const w = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
  const buf = Buffer.alloc(MiB);
  for (let at = 0; at < size; at += 2 * MiB) {
    for (let i = 0; i < MiB; i += 4) buf.writeUInt32LE((at + i) * 2654435761 >>> 0, i);
    await w.device.write(at, buf);
  }
  await driver.detach(w.id);
  const [copyMs, copy] = await ms(() => driver.createSnapshot(v.id, 'copy'));
  const image = join(dir, 'volumes', `${v.id}.qcow2`);
  const [overlayMs] = await ms(async () => execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', image, join(dir, 'overlay.qcow2')]));
  const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
  const [viewMs, view] = await ms(() => driver.createSnapshot(v.id, 'view'));
  const [viewDelMs] = await ms(() => driver.deleteSnapshot(view.id));
  const [queryMs, ext] = await ms(() => rw.device.extents({ kind: 'changed', since: cp.id }));
  await driver.detach(rw.id);
  const ro = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
  const into = Buffer.allocUnsafe(MiB);
  const [readMs] = await ms(async () => {
    const lanes = 8;
    let next = 0;
    await Promise.all(Array.from({ length: lanes }, async () => {
      const mine = Buffer.allocUnsafe(MiB);
      while (next < size) {
        const at = next;
        next += MiB;
        await ro.device.read(at, MiB, mine);
      }
    }));
  });
  void into;
  await driver.detach(ro.id);
  const du = (p) => Number(execFileSync('du', ['-k', p]).toString().split('\t')[0]) / 1024;
  console.log(JSON.stringify({
    volumeMiB: size / MiB,
    dataMiB: size / MiB / 2,
    snapshotCopyMs: Math.round(copyMs),
    snapshotCopyDiskMiB: du(join(dir, 'snapshots', `${copy.id}.qcow2`)),
    overlayCreateMs: Math.round(overlayMs),
    viewCreateMs: Math.round(viewMs),
    viewDeleteMs: Math.round(viewDelMs),
    changedQueryMs: Math.round(queryMs),
    changedExtents: ext.length,
    readMBps: Math.round(size / 1e6 / (readMs / 1000)),
  }));
} finally {
  await driver.close();
  await rm(dir, { recursive: true, force: true });
}
