// blockDeviceBackend advertises NBD_FLAG_SEND_FUA for a writable device; proto.md: with
// NBD_CMD_FLAG_FUA "the server MUST NOT send its reply until the data has reached permanent
// storage". A BlockDevice makes writes durable only through flush(), so a FUA write or
// write-zeroes must flush the device before it is answered. Checked with qemu-io (`write -f`).
import { join } from 'node:path';
import { MemoryVolumeDriver, type BlockDevice } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdServer, blockDeviceBackend, type NbdBackend } from '../src/index.js';
import { mustRun, tempDir } from './helpers/peers.js';

const MiB = 1024 * 1024;

/** A device that records the order of writes and flushes. */
function recording(device: BlockDevice, log: string[]): BlockDevice {
  return {
    size: device.size,
    mode: device.mode,
    extentGranularity: device.extentGranularity,
    read: (o, n, into) => device.read(o, n, into),
    write: async (o, d) => {
      await device.write(o, d);
      log.push(`write ${o}`);
    },
    writeZeroes: async (o, n) => {
      await device.writeZeroes(o, n);
      log.push(`zero ${o}`);
    },
    flush: async () => {
      await device.flush();
      log.push('flush');
    },
    extents: async (q, r) => {
      log.push(`extents ${r?.offset}`); // the server looks here first for every read
      return device.extents(q, r);
    },
    close: () => device.close(),
  };
}

let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let sock: string;
const log: string[] = [];

beforeAll(async () => {
  dir = await tempDir('nbd-fua-');
  sock = join(dir.path, 's.sock');
  const driver = new MemoryVolumeDriver({ pageSize: 4096 });
  const vol = await driver.createVolume({ name: 'v', size: 4 * MiB });
  const device = (await driver.attach({ kind: 'volume', id: vol.id }, 'rw')).device;
  server = new NbdServer({ exports: [{ name: 'd', backend: blockDeviceBackend(recording(device, log)) }] });
  await server.listen({ path: sock });
});

afterAll(async () => {
  await server?.close();
  await dir?.remove();
});

describe('blockDeviceBackend honours FUA', () => {
  it('a FUA write from qemu-io (write -f) flushes the device before it is answered', async () => {
    log.length = 0;
    // The read after it is sent only once the write was answered; qemu-io flushes again on exit.
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -f -P 0x5a 65536 4096', '-c', 'read -P 0x5a 65536 4096', `nbd+unix:///d?socket=${sock}`]);
    const w = log.indexOf('write 65536');
    const r = log.indexOf('extents 65536');
    expect(w).toBeGreaterThanOrEqual(0);
    expect(r).toBeGreaterThan(w);
    expect(log.slice(w + 1, r)).toContain('flush');
  });

  it('a FUA write-zeroes from qemu-io (write -z -u -f) flushes the device before it is answered', async () => {
    log.length = 0;
    // -u: qemu may unmap, so no NBD_CMD_FLAG_NO_HOLE and the device's writeZeroes is used (with
    // NO_HOLE, zeros are written as data: block-device-backend-no-hole.test.ts).
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -z -u -f 131072 4096', '-c', 'read -P 0 131072 4096', `nbd+unix:///d?socket=${sock}`]);
    const z = log.indexOf('zero 131072');
    const r = log.indexOf('extents 131072');
    expect(z).toBeGreaterThanOrEqual(0);
    expect(r).toBeGreaterThan(z);
    expect(log.slice(z + 1, r)).toContain('flush');
  });
});

describe('NbdServer honours FUA on TRIM', () => {
  it('trim(fua) is answered only after the backend flushed, after its trim', async () => {
    const calls: string[] = [];
    const backend: NbdBackend = {
      size: MiB,
      read: async (_o, n) => [{ zero: n }],
      write: async () => undefined,
      trim: async (o) => {
        await new Promise((r) => setTimeout(r, 20));
        calls.push(`trim ${o}`);
      },
      flush: async () => {
        await new Promise((r) => setTimeout(r, 20));
        calls.push('flush');
      },
    };
    const trimServer = new NbdServer({ exports: [{ name: 't', backend }] });
    const path = join(dir.path, 'trim.sock');
    await trimServer.listen({ path });
    const client = await NbdClient.connect({ path, exportName: 't' });
    try {
      expect(client.canTrim && client.canFua).toBe(true);
      await client.trim(4096, 8192, { fua: true });
      expect(calls).toEqual(['trim 4096', 'flush']);
      await client.trim(0, 4096);
      expect(calls).toEqual(['trim 4096', 'flush', 'trim 0']);
    } finally {
      await client.disconnect();
      await trimServer.close();
    }
  });
});
