// proto.md, NBD_CMD_WRITE_ZEROES: "By default, the server MAY use trimming to zero out the area
// ... However, the client MAY set the command flag NBD_CMD_FLAG_NO_HOLE to inform the server
// that the area MUST be fully provisioned", and for the flag: "The server MUST support the use of
// this flag if it advertises NBD_FLAG_SEND_WRITE_ZEROES". BlockDevice.writeZeroes may deallocate
// ("deallocating where the driver can"), so blockDeviceBackend must not use it for NO_HOLE.
import { join } from 'node:path';
import { MemoryVolumeDriver, type BlockDevice } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdServer, blockDeviceBackend } from '../src/index.js';
import { mustRun, tempDir } from './helpers/peers.js';

const KiB = 1024;
const HOLE = 1;

let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let sock: string;
let device: BlockDevice;

beforeAll(async () => {
  dir = await tempDir('nbd-nohole-');
  sock = join(dir.path, 's.sock');
  const driver = new MemoryVolumeDriver({ pageSize: 4096 });
  const vol = await driver.createVolume({ name: 'v', size: 1024 * KiB });
  device = (await driver.attach({ kind: 'volume', id: vol.id }, 'rw')).device;
  server = new NbdServer({ exports: [{ name: 'd', backend: blockDeviceBackend(device) }] });
  await server.listen({ path: sock });
});

afterAll(async () => {
  await server?.close();
  await dir?.remove();
});

/** Whether any byte of [offset, +length) is reported as a hole by base:allocation. */
async function anyHole(client: NbdClient, offset: number, length: number): Promise<boolean> {
  return (await client.mapExtents('base:allocation', offset, length)).some((e) => (e.flags & HOLE) !== 0);
}

describe('blockDeviceBackend and NBD_CMD_FLAG_NO_HOLE', () => {
  it('WRITE_ZEROES with NO_HOLE leaves the range allocated (and reading zeros)', async () => {
    const client = await NbdClient.connect({ path: sock, exportName: 'd' });
    try {
      await client.write(64 * KiB, Buffer.alloc(16 * KiB, 0x5a));
      expect(await anyHole(client, 64 * KiB, 16 * KiB)).toBe(false);
      await client.writeZeroes(64 * KiB, 16 * KiB, { noHole: true });
      expect((await client.read(64 * KiB, 16 * KiB)).equals(Buffer.alloc(16 * KiB))).toBe(true);
      expect(await anyHole(client, 64 * KiB, 16 * KiB)).toBe(false);
      const allocated = await device.extents({ kind: 'allocated' }, { offset: 64 * KiB, length: 16 * KiB });
      expect(allocated.reduce((n, e) => n + e.length, 0)).toBe(16 * KiB);
    } finally {
      await client.disconnect();
    }
  });

  it('qemu-io write -z (NO_HOLE) keeps the range allocated; write -z -u may punch a hole', async () => {
    const uri = `nbd+unix:///d?socket=${sock}`;
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 256k 64k', '-c', 'write -z 256k 64k', '-c', 'read -P 0 256k 64k', uri]);
    const client = await NbdClient.connect({ path: sock, exportName: 'd' });
    try {
      expect(await anyHole(client, 256 * KiB, 64 * KiB)).toBe(false);
      // Without NO_HOLE the server may deallocate: it still reads as zeros.
      await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -z -u 256k 64k', '-c', 'read -P 0 256k 64k', uri]);
      expect((await client.read(256 * KiB, 64 * KiB)).equals(Buffer.alloc(64 * KiB))).toBe(true);
    } finally {
      await client.disconnect();
    }
  });
});
