import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BackupManager,
  ChunkedBackupService,
  MemoryObjectStore,
  RepositoryCatalog,
  newId,
  nowIso,
  type BlockDevice,
  type BackupRecord,
  type Volume,
} from '@cairn/core';
import type { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, freshDriver, halfSparse, missingQemu, pattern, qemuImg } from './helpers.js';

const FAST_KDF = { N: 1024, r: 8, p: 1 };
const SIZE = 16 * MiB;

let driver: Qcow2VolumeDriver;
let service: ChunkedBackupService;

beforeAll(async () => {
  driver = await freshDriver();
  service = await ChunkedBackupService.open(new MemoryObjectStore('mem'), { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: MiB, kdf: FAST_KDF } });
});
afterAll(async () => {
  await service?.close?.();
  if (driver) await disposeDriver(driver);
});

function record(volume: Volume): BackupRecord {
  const now = nowIso();
  return { id: newId(), name: '', description: '', volumeId: volume.id, volumeName: volume.name, size: volume.size, status: 'creating', service: 'repo', incremental: false, volumeMetadata: {}, serviceData: {}, createdAt: now, updatedAt: now };
}

/** A device whose first read waits for `during()` to finish: what runs there runs in the middle of a backup. */
function holdFirstRead(device: BlockDevice, during: () => Promise<void>): BlockDevice {
  let gate: Promise<void> | undefined;
  return new Proxy(device, {
    get(target, prop, receiver) {
      if (prop === 'read') {
        return async (offset: number, length: number, into?: Buffer) => {
          gate ??= during();
          await gate;
          return target.read(offset, length, into);
        };
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

async function imagePath(kind: 'volumes', id: string): Promise<string> {
  return `${driver.directory}/${kind}/${id}.qcow2`;
}

describe.skipIf(missingQemu.length > 0)(`fleecing views and restores (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('backup of a view while a rw attachment overwrites the volume holds the point-in-time data, and so does the view read afterwards', async () => {
    const v = await driver.createVolume({ size: SIZE });
    const rw = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const before = pattern(SIZE, 1);
    await rw.device.write(0, before);
    await rw.device.flush();
    const snap = await driver.createSnapshot(v.id, 'view');
    const view = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
    const after = pattern(SIZE, 2);
    let wrote = 0;
    const overwrite = async () => {
      for (let at = 0; at < SIZE; at += MiB) {
        await rw.device.write(at, after.subarray(at, at + MiB));
        wrote += MiB;
      }
      await rw.device.writeZeroes(SIZE - 2 * MiB, 2 * MiB);
      after.fill(0, SIZE - 2 * MiB);
      await rw.device.flush();
    };
    const job = { backup: record(v), volume: v, signal: new AbortController().signal, progress: () => {} };
    const result = await service.backup(job, { device: holdFirstRead(view.device, overwrite) });
    expect(wrote).toBe(SIZE);
    expect((await view.device.read(0, SIZE)).equals(before)).toBe(true);
    expect((await rw.device.read(0, SIZE)).equals(after)).toBe(true);

    const target = await driver.createVolume({ size: SIZE });
    const t = await driver.attach({ kind: 'volume', id: target.id }, 'rw');
    await service.restore({ ...job.backup, status: 'available', serviceData: result.serviceData, stats: result.stats }, t.device, { targetIsZeroed: true });
    expect((await t.device.read(0, SIZE)).equals(before)).toBe(true);
    for (const a of [t, view, rw]) await driver.detach(a.id);
    await driver.deleteSnapshot(snap.id);
  });

  it('views taken one after another stay isolated, also from a rw attachment made after them', async () => {
    const v = await driver.createVolume({ size: 4 * MiB });
    const w1 = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await w1.device.write(0, Buffer.alloc(MiB, 1));
    const s1 = await driver.createSnapshot(v.id); // the image is open: a view, which keeps it open
    await driver.detach(w1.id);
    const s2 = await driver.createSnapshot(v.id); // a view too, of an image no attachment holds
    const w2 = await driver.attach({ kind: 'volume', id: v.id }, 'rw'); // exported above both filters
    await w2.device.write(0, Buffer.alloc(MiB, 2));
    const s3 = await driver.createSnapshot(v.id);
    await w2.device.write(0, Buffer.alloc(MiB, 3));
    await driver.detach(w2.id);
    for (const [snap, byte] of [[s1, 1], [s2, 1], [s3, 2]] as const) {
      const a = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
      expect((await a.device.read(0, MiB)).equals(Buffer.alloc(MiB, byte))).toBe(true);
      await driver.detach(a.id);
    }
    await driver.deleteSnapshot(s1.id);
    const w3 = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await w3.device.write(0, Buffer.alloc(MiB, 4));
    await driver.detach(w3.id);
    for (const [snap, byte] of [[s2, 1], [s3, 2]] as const) {
      const a = await driver.attach({ kind: 'snapshot', id: snap.id }, 'ro');
      expect((await a.device.read(0, MiB)).equals(Buffer.alloc(MiB, byte))).toBe(true);
      await driver.detach(a.id);
    }
    const r = await driver.attach({ kind: 'volume', id: v.id }, 'ro');
    expect((await r.device.read(0, MiB)).equals(Buffer.alloc(MiB, 4))).toBe(true);
    await driver.detach(r.id);
    await driver.deleteSnapshot(s2.id);
    await driver.deleteSnapshot(s3.id);
    expect(await driver.listSnapshots(v.id)).toEqual([]);
  });

  it('restore through the driver: qemu-img compare finds the image equal to the source, and zero runs stay unallocated', async () => {
    const manager = new BackupManager({ volumes: driver, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const src = await driver.createVolume({ size: SIZE });
    const a = await driver.attach({ kind: 'volume', id: src.id }, 'rw');
    await a.device.write(0, halfSparse(SIZE, 7));
    await driver.detach(a.id);
    const backup = await manager.backup({ volumeId: src.id });

    // Restore into an existing volume full of data: the zero runs must become holes, not zero bytes.
    const dst = await driver.createVolume({ size: SIZE });
    const d = await driver.attach({ kind: 'volume', id: dst.id }, 'rw');
    await d.device.write(0, pattern(SIZE, 8));
    await driver.detach(d.id);
    await manager.restore({ backupId: backup.id, volumeId: dst.id });

    const srcPath = await imagePath('volumes', src.id);
    const dstPath = await imagePath('volumes', dst.id);
    const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', srcPath, dstPath]);
    expect(compare.stderr).toBe('');
    expect(compare.status).toBe(0);
    const map = JSON.parse(qemuImg(['map', '--output=json', '-f', 'qcow2', dstPath]).stdout) as { length: number; data: boolean }[];
    const dataBytes = map.filter((e) => e.data).reduce((n, e) => n + e.length, 0);
    expect(dataBytes).toBe(SIZE / 2);

    const bad = await driver.attach({ kind: 'volume', id: dst.id }, 'rw');
    await bad.device.write(5 * MiB, Buffer.alloc(512, 0xff));
    await driver.detach(bad.id);
    expect(qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', srcPath, dstPath]).status).toBe(1);
  });
});
