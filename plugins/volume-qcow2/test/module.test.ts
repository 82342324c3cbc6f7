import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { DriverRegistry } from '@cairn/core';
import { Qcow2VolumeDriver, qcow2VolumeModule } from '../src/index.js';
import { tempDir } from './helpers.js';

describe('qcow2VolumeModule', () => {
  const registry = DriverRegistry.compose(qcow2VolumeModule);

  it('registers the volume driver `qcow2`', () => {
    expect(registry.names().volumeDrivers).toEqual(['qcow2']);
  });

  it('createVolumeDriver(qcow2) without a directory, or with a non-string option, fails with INVALID_INPUT', async () => {
    await expect(registry.createVolumeDriver('qcow2', {})).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(registry.createVolumeDriver('qcow2', { directory: 5 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(registry.createVolumeDriver('qcow2', { directory: '/tmp/x', runtimeDir: '' })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(registry.createVolumeDriver('qcow2', { directory: '/tmp/x', commandTimeoutMs: 0 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(() => new Qcow2VolumeDriver({ directory: '/tmp/x', commandTimeoutMs: Number.NaN })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
  });

  it('qemuImgTimeoutMs and qemuImgStallMs that are not positive numbers of milliseconds fail with INVALID_INPUT naming the option', async () => {
    for (const key of ['qemuImgTimeoutMs', 'qemuImgStallMs']) {
      for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, '1000']) {
        await expect(registry.createVolumeDriver('qcow2', { directory: '/tmp/x', [key]: bad })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining(key) });
        expect(() => new Qcow2VolumeDriver({ directory: '/tmp/x', [key]: bad as number })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringContaining(key) }));
      }
    }
    const driver = (await registry.createVolumeDriver('qcow2', { directory: '/tmp/x', qemuImgTimeoutMs: 5000, qemuImgStallMs: 7000 })) as Qcow2VolumeDriver;
    await driver.close();
  });

  it('stopTimeoutMs that is not a positive number of milliseconds, or is past node\'s longest timer, fails with INVALID_INPUT naming it', async () => {
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, '1000', 2 ** 31]) {
      const refusal = expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringContaining('stopTimeoutMs'), details: { option: 'stopTimeoutMs' } });
      await expect(registry.createVolumeDriver('qcow2', { directory: '/tmp/x', stopTimeoutMs: bad })).rejects.toEqual(refusal);
      expect(() => new Qcow2VolumeDriver({ directory: '/tmp/x', stopTimeoutMs: bad as number })).toThrow(refusal);
    }
    const driver = (await registry.createVolumeDriver('qcow2', { directory: '/tmp/x', stopTimeoutMs: 2 ** 31 - 1 })) as Qcow2VolumeDriver;
    await driver.close();
  });

  it('an unknown option (a misspelt key) fails with INVALID_INPUT naming it in the message and details.option, rather than being ignored', async () => {
    for (const key of ['comandTimeoutMs', 'directroy', 'qemu-img', 'reserveBytes']) {
      await expect(registry.createVolumeDriver('qcow2', { directory: '/tmp/x', [key]: 1000 })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringContaining(`\`${key}\``),
        details: { option: key },
      });
      // The constructor, which a deployment may call directly, refuses it the same way.
      expect(() => new Qcow2VolumeDriver({ directory: '/tmp/x', [key]: 1000 } as unknown as ConstructorParameters<typeof Qcow2VolumeDriver>[0])).toThrow(
        expect.objectContaining({ code: 'INVALID_INPUT', details: { option: key } }),
      );
    }
    // A bad known option names itself in details.option as well.
    await expect(registry.createVolumeDriver('qcow2', { directory: '/tmp/x', qemuImg: 7 })).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { option: 'qemuImg' } });
    await expect(registry.createVolumeDriver('qcow2', { directory: ' ' })).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { option: 'directory' } });
    // Every known option is taken.
    const all = { directory: '/tmp/x', runtimeDir: '/tmp', qemuImg: 'qemu-img', qemuStorageDaemon: 'qemu-storage-daemon', commandTimeoutMs: 1000, stopTimeoutMs: 1000, qemuImgTimeoutMs: 1000, qemuImgStallMs: 1000 };
    const driver = (await registry.createVolumeDriver('qcow2', all)) as Qcow2VolumeDriver;
    await driver.close();
  });

  it('createVolumeDriver(qcow2, {directory}) builds a driver that starts no daemon until needed', async () => {
    const driver = (await registry.createVolumeDriver('qcow2', { directory: '/nonexistent/cairn' })) as Qcow2VolumeDriver;
    expect(driver).toBeInstanceOf(Qcow2VolumeDriver);
    expect(await driver.daemonPid()).toBeUndefined();
    await driver.close();
  });

  it('a missing qemu-storage-daemon program makes attach, deleteVolume and extendVolume (which hold the image in the daemon) fail with UNAVAILABLE; the volume stays as it was', async () => {
    const driver = new Qcow2VolumeDriver({ directory: await tempDir(), qemuStorageDaemon: '/nonexistent/qemu-storage-daemon' });
    const v = await driver.createVolume({ size: 1024 * 1024 });
    await expect(driver.attach({ kind: 'volume', id: v.id }, 'ro')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(driver.deleteVolume(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(driver.extendVolume(v.id, 2 * 1024 * 1024)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(await driver.getVolume(v.id)).toMatchObject({ status: 'available', size: 1024 * 1024 });
    await driver.close();
    await rm(driver.directory, { recursive: true, force: true });
  });
});
