import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '@cairn/qmp';
import { MiB, disposeDriver, freshDriver, missingQemu } from './helpers.js';
import type { Qcow2VolumeDriver } from '../src/index.js';

// Another process (here a second qemu-storage-daemon, as a running VM would) holding a volume's
// image: deleteVolume and setVolumeMetadata, which take the image's lock in the driver's daemon
// (holdImage), report qemu's lock failure as BUSY in the driver's words, naming the image.

let driver: Qcow2VolumeDriver | undefined;
let other: QemuStorageDaemon | undefined;

afterAll(async () => {
  await other?.stop();
  if (driver) await disposeDriver(driver);
});

describe.skipIf(missingQemu.length > 0)(`an image another process holds (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('deleteVolume and setVolumeMetadata fail with BUSY "image … is locked by another process"; the volume is kept and attaches once the other process let go', async () => {
    driver = await freshDriver();
    const v = await driver.createVolume({ size: 8 * MiB });
    const image = join(driver.directory, 'volumes', `${v.id}.qcow2`);
    other = await QemuStorageDaemon.start({
      args: ['--blockdev', `driver=file,node-name=f0,filename=${image}`, '--blockdev', 'driver=qcow2,node-name=d0,file=f0'],
    });
    const message = `image ${image} is locked by another process`;
    await expect(driver.deleteVolume(v.id)).rejects.toMatchObject({ code: 'BUSY', message: expect.stringContaining(message) });
    await expect(driver.setVolumeMetadata(v.id, { k: 'v' })).rejects.toMatchObject({ code: 'BUSY', message: expect.stringContaining(message) });
    await other.stop();
    expect((await driver.getVolume(v.id)).metadata).toEqual({});
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await driver.detach(a.id);
  });
});
