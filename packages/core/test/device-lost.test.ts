/**
 * BaseBlockDevice.lose: a device its driver gave up (its backend died) fails every later call
 * with the driver's reason, not with the INVALID_INPUT of a device its caller closed.
 */
import { describe, expect, it } from 'vitest';
import { BaseBlockDevice, CairnError, MemoryVolumeDriver } from '../src/index.js';

async function attached(): Promise<BaseBlockDevice> {
  const driver = new MemoryVolumeDriver();
  const v = await driver.createVolume({ size: 1 << 20 });
  const { device } = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
  expect(device).toBeInstanceOf(BaseBlockDevice);
  return device as BaseBlockDevice;
}

describe('a block device lost by its driver', () => {
  it('fails reads, writes, flushes and extents with the driver’s reason (code, message, details), and stays closed', async () => {
    const device = await attached();
    await device.lose(new CairnError('UNAVAILABLE', 'the daemon serving it died', { details: { pid: 42 } }));
    expect(device.isClosed).toBe(true);
    for (const call of [() => device.read(0, 512), () => device.write(0, Buffer.alloc(512)), () => device.writeZeroes(0, 512), () => device.flush(), () => device.extents({ kind: 'allocated' })]) {
      await expect(call()).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('the daemon serving it died'), details: { pid: 42 } });
    }
    // A second loss keeps the first reason.
    await device.lose(new CairnError('INTERNAL', 'another'));
    await expect(device.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('a device its caller closed is INVALID_INPUT "device is closed", as before', async () => {
    const device = await attached();
    await device.close();
    await expect(device.read(0, 512)).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('device is closed') });
  });
});
