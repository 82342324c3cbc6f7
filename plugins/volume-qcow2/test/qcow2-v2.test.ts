import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryObjectStore, RepositoryCatalog } from '@cairn/core';
import type { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, freshDriver, halfSparse, missingQemu, pattern, qemuImg } from './helpers.js';

// qcow2 version 2 images (`qemu-img create -o compat=0.10`, still common) made outside the driver
// and put in place of a volume's image: served for everything but changed-block tracking, which
// needs persistent bitmaps (version 3). The image is never amended.

const SIZE = 16 * MiB;
const CHUNK = 256 * 1024;
const FAST_KDF = { N: 1024, r: 8, p: 1 };

let d: Qcow2VolumeDriver;
let manager: BackupManager;
beforeAll(async () => {
  d = await freshDriver();
  const service = await ChunkedBackupService.open(new MemoryObjectStore('mem'), { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: 4 * MiB, kdf: FAST_KDF } });
  manager = new BackupManager({ volumes: d, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
});
afterAll(async () => {
  if (d) await disposeDriver(d);
});

/** The qcow2 version of the image at `path`, as qemu-img reports it (`0.10` is version 2). */
function compatOf(path: string): string {
  const info = JSON.parse(qemuImg(['info', '--output=json', '-U', path]).stdout) as { 'format-specific'?: { data?: { compat?: string } } };
  return info['format-specific']?.data?.compat ?? '';
}

/** A volume whose image was replaced by a version 2 image that qemu-img converted from `content`. */
async function v2Volume(content: Buffer): Promise<{ volumeId: string; image: string }> {
  const v = await d.createVolume({ size: content.length, name: 'old' });
  const image = join(d.directory, 'volumes', `${v.id}.qcow2`);
  const raw = `${image}.raw`;
  await writeFile(raw, content);
  await rm(image);
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=0.10', raw, image]);
  await rm(raw);
  expect(compatOf(image)).toBe('0.10');
  return { volumeId: v.id, image };
}

const sha = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');

async function readAll(target: { kind: 'volume' | 'snapshot'; id: string }, size = SIZE): Promise<Buffer> {
  const a = await d.attach(target, 'ro');
  try {
    return await a.device.read(0, size);
  } finally {
    await d.detach(a.id);
  }
}

describe.skipIf(missingQemu.length > 0)(`qcow2 version 2 volumes (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('say they have no changed-block tracking; a checkpoint is NOT_SUPPORTED naming the version, and changes nothing', async () => {
    const { volumeId, image } = await v2Volume(halfSparse(SIZE, 1));
    const before = await sha(image);
    expect(await d.getVolume(volumeId)).toMatchObject({ id: volumeId, size: SIZE, capabilities: { changedBlockTracking: false } });
    expect((await d.listVolumes()).find((v) => v.id === volumeId)?.capabilities).toEqual({ changedBlockTracking: false });
    await expect(d.changedBlockTracking.createCheckpoint(volumeId)).rejects.toMatchObject({ code: 'NOT_SUPPORTED', message: expect.stringContaining('version 2') });
    expect(await d.changedBlockTracking.listCheckpoints(volumeId)).toEqual([]);
    expect(await sha(image)).toBe(before);
    // A volume the driver made (version 3) says nothing of its capabilities: it has the driver's.
    const v3 = await d.createVolume({ size: MiB });
    expect((await d.getVolume(v3.id)).capabilities).toBeUndefined();
  });

  it('attach, write, snapshot copies and views, and extend work on the image, which stays version 2', async () => {
    const content = halfSparse(SIZE, 2);
    const { volumeId, image } = await v2Volume(content);
    expect((await readAll({ kind: 'volume', id: volumeId })).equals(content)).toBe(true);

    const w = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    await w.device.write(3 * MiB + 100, pattern(70_000, 5));
    pattern(70_000, 5).copy(content, 3 * MiB + 100);
    await w.device.writeZeroes(0, MiB);
    content.fill(0, 0, MiB);
    const view = await d.createSnapshot(volumeId, 'view'); // open in the daemon: a fleecing view
    await w.device.write(0, Buffer.alloc(4096, 0xee)); // after the view: not in it
    expect((await readAll({ kind: 'snapshot', id: view.id })).equals(content)).toBe(true);
    await d.deleteSnapshot(view.id);
    Buffer.alloc(4096, 0xee).copy(content, 0);
    await d.detach(w.id);

    const copy = await d.createSnapshot(volumeId, 'copy'); // closed: a sparse copy
    expect((await readAll({ kind: 'snapshot', id: copy.id })).equals(content)).toBe(true);
    await d.deleteSnapshot(copy.id);

    expect(await d.extendVolume(volumeId, 2 * SIZE)).toMatchObject({ size: 2 * SIZE, capabilities: { changedBlockTracking: false } });
    const grown = await readAll({ kind: 'volume', id: volumeId }, 2 * SIZE);
    expect(grown.subarray(0, SIZE).equals(content)).toBe(true);
    expect(grown.subarray(SIZE).equals(Buffer.alloc(SIZE))).toBe(true);
    expect(compatOf(image)).toBe('0.10');
    expect(qemuImg(['check', image]).status).toBe(0);
  });

  it('back up in full through the flow (no checkpoint), restore byte-exact, and a second backup reads the whole volume again', async () => {
    const content = halfSparse(SIZE, 3);
    const { volumeId, image } = await v2Volume(content);

    const full = await manager.backup({ volumeId });
    expect(full).toMatchObject({ status: 'available', incremental: false });
    expect(full.checkpointId).toBeUndefined();
    expect(full.stats!.bytesRead).toBeGreaterThanOrEqual(SIZE / 2);

    // Written while attached (a VM would hold it): the next backup goes through a view and reads it all.
    const vm = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    await vm.device.write(4 * MiB + 8192, pattern(4096, 7)); // inside a run of data: the volume holds as much data as before
    pattern(4096, 7).copy(content, 4 * MiB + 8192);
    const second = await manager.backup({ volumeId, incremental: true, force: true });
    expect(second).toMatchObject({ status: 'available', incremental: true, parentId: full.id });
    expect(second.checkpointId).toBeUndefined();
    expect(second.stats!.bytesRead).toBe(full.stats!.bytesRead); // every data byte again, not the 4 KiB written
    expect(await d.listSnapshots(volumeId)).toEqual([]);
    await d.detach(vm.id);

    const { volume: restored } = await manager.restore({ backupId: second.id, newVolume: { name: 'restored' } });
    expect((await readAll({ kind: 'volume', id: restored.id })).equals(content)).toBe(true);

    // Restored into the version 2 volume itself, over other data: byte-exact, and still version 2.
    const w = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
    await w.device.write(0, pattern(SIZE, 9));
    await d.detach(w.id);
    await manager.restore({ backupId: full.id, volumeId });
    const expected = halfSparse(SIZE, 3);
    expect((await readAll({ kind: 'volume', id: volumeId })).equals(expected)).toBe(true);
    expect(compatOf(image)).toBe('0.10');
    expect(await d.changedBlockTracking.listCheckpoints(volumeId)).toEqual([]);
  });
});
