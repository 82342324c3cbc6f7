import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupManager, ChunkedBackupService, MemoryObjectStore, RepositoryCatalog, DriverRegistry } from '@cairn/core';
import { qcow2VolumeModule, type Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, halfSparse, missingQemu, pattern, tempDir } from './helpers.js';

const FAST_KDF = { N: 1024, r: 8, p: 1 };
const SIZE = 32 * MiB;
const CHUNK = 256 * 1024;

let driver: Qcow2VolumeDriver;
let manager: BackupManager;

beforeAll(async () => {
  // Built through the plugin module, as a deployment would.
  driver = (await DriverRegistry.compose(qcow2VolumeModule).createVolumeDriver('qcow2', { directory: await tempDir() })) as Qcow2VolumeDriver;
  const service = await ChunkedBackupService.open(new MemoryObjectStore('mem'), { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: 4 * MiB, kdf: FAST_KDF } });
  manager = new BackupManager({ volumes: driver, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
});
afterAll(async () => {
  if (driver) await disposeDriver(driver);
});

describe.skipIf(missingQemu.length > 0)(`BackupManager over the qcow2 driver (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('full backup, writes, then an incremental of the volume in use reads only the changed chunks; restore to a new volume is byte-exact', async () => {
    const v = await driver.createVolume({ size: SIZE, name: 'disk' });
    const content = halfSparse(SIZE, 3);
    const w = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(0, content);
    await driver.detach(w.id);

    const full = await manager.backup({ volumeId: v.id });
    expect(full.incremental).toBe(false);
    expect(full.stats!.bytesRead).toBeGreaterThanOrEqual(SIZE / 2);
    expect(full.checkpointId).toBeDefined();

    // The volume is in use (a rw attachment, as a running VM would hold): the flow takes a fleecing view.
    const vm = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const writes = [
      { offset: 100, data: pattern(5000, 10) },
      { offset: 9 * MiB + 4096, data: pattern(70_000, 11) },
      { offset: SIZE - 4096, data: pattern(4096, 12) },
    ];
    for (const x of writes) {
      await vm.device.write(x.offset, x.data);
      x.data.copy(content, x.offset);
    }
    await vm.device.writeZeroes(20 * MiB, MiB);
    content.fill(0, 20 * MiB, 21 * MiB);
    await expect(manager.backup({ volumeId: v.id, incremental: true })).rejects.toMatchObject({ code: 'CONFLICT' });
    const incr = await manager.backup({ volumeId: v.id, incremental: true, force: true });
    expect(incr.incremental).toBe(true);
    expect(incr.parentId).toBe(full.id);
    // 4 touched chunks (the zeroed MiB is 4 chunks of its own): at most 8 chunks read, never the whole volume.
    expect(incr.stats!.bytesRead).toBeGreaterThan(0);
    expect(incr.stats!.bytesRead).toBeLessThanOrEqual(8 * CHUNK);
    // A write after the view was taken is not in the backup.
    await vm.device.write(0, Buffer.alloc(512, 0xee));
    expect(await driver.listSnapshots(v.id)).toEqual([]); // the temporary view is gone
    expect((await driver.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([incr.checkpointId]);

    const { volume: restored } = await manager.restore({ backupId: incr.id, newVolume: { name: 'restored' } });
    const r = await driver.attach({ kind: 'volume', id: restored.id }, 'ro');
    expect((await r.device.read(0, SIZE)).equals(content)).toBe(true);
    await driver.detach(r.id);
    await driver.detach(vm.id);
  });
});
