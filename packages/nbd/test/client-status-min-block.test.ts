// proto.md, "Block size constraints": a client that asked for block sizes "MUST ensure that
// *offset* and *length* are integer multiples of any advertised minimum block size", and no
// request may pass the end of the export. NbdClient.blockStatus/mapExtents must round the range
// out to whole blocks inside `addressableSize` and trim the answer back to what the caller asked,
// as `read` does. The peer is qemu-nbd 7.2 over `blkdebug align=4096` on a 12800-byte file (size
// not a multiple of the minimum 4096, which qemu-nbd serves read-only), traced with
// `nbd_co_receive_align_compliance`: qemu serves unaligned requests but logs each one, so the log
// shows every unaligned request we sent. (libnbd's `nbdinfo --map` refuses to send them:
// "nbd_block_status: request is unaligned".)
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../src/index.js';
import { mustRun, startDaemon, tempDir, type Daemon } from './helpers/peers.js';

const MIN = 4096;
const SIZE = 12800;

let dir: { path: string; remove: () => Promise<void> };
let daemon: Daemon;
let sock: string;

beforeAll(async () => {
  dir = await tempDir('nbd-csm-');
  const img = join(dir.path, 'a.raw');
  sock = join(dir.path, 'q.sock');
  await mustRun('qemu-img', ['create', '-q', '-f', 'raw', img, String(SIZE)]);
  // Data in the first and third blocks; the second block and the tail are a hole.
  await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 7 0 ${MIN}`, '-c', `write -P 7 ${2 * MIN} ${MIN}`, img]);
  daemon = await startDaemon(
    'qemu-nbd',
    ['-r', '-t', '-x', 'd', '-k', sock, '--trace', 'nbd_co_receive_align_compliance', '--image-opts', `driver=blkdebug,align=${MIN},image.driver=file,image.filename=${img}`],
    [sock],
  );
});

afterAll(async () => {
  await daemon?.stop();
  await dir?.remove();
});

/** No `nbd_co_receive_align_compliance` line in qemu-nbd's stderr (given a moment to arrive). */
async function qemuSawOnlyAlignedRequests(): Promise<void> {
  await new Promise((r) => setTimeout(r, 200));
  expect(daemon.log()).not.toMatch(/nbd_co_receive_align_compliance/);
}

describe('NbdClient block status with a minimum block size', () => {
  it('sends only aligned BLOCK_STATUS requests inside the addressable size and trims the answer to the range asked', async () => {
    const client = await NbdClient.connect({ path: sock, exportName: 'd', metaContexts: ['base:allocation'] });
    try {
      expect(client.size).toBe(SIZE);
      expect(client.blockSizes.min).toBe(MIN);
      expect(client.addressableSize).toBe(3 * MIN);
      // Unaligned start and end: rounded out to [0, 8192), trimmed back to [100, 5100).
      expect(await client.blockStatus('base:allocation', 100, 5000)).toEqual([
        { offset: 100, length: MIN - 100, flags: 0 },
        { offset: MIN, length: 1004, flags: 3 },
      ]);
      expect(await client.blockStatus('base:allocation', 6000, 1000)).toEqual([{ offset: 6000, length: 1000, flags: 3 }]);
      await qemuSawOnlyAlignedRequests();
      // Reaching into the unaddressable tail: described up to addressableSize only (less than asked).
      expect(await client.blockStatus('base:allocation', 12000, 800)).toEqual([{ offset: 12000, length: 3 * MIN - 12000, flags: 0 }]);
      expect(await client.mapExtents('base:allocation', 50, 12000)).toEqual([
        { offset: 50, length: MIN - 50, flags: 0 },
        { offset: MIN, length: MIN, flags: 3 },
        { offset: 2 * MIN, length: 12050 - 2 * MIN, flags: 0 },
      ]);
      // Wholly in the tail, or a map that must cover it: refused before anything is sent.
      await expect(client.blockStatus('base:allocation', 12500, 100)).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
      await expect(client.mapExtents('base:allocation')).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
      await expect(client.mapExtents('base:allocation', 0, 3 * MIN + 1)).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
      expect(await client.mapExtents('base:allocation', 0, 3 * MIN)).toEqual([
        { offset: 0, length: MIN, flags: 0 },
        { offset: MIN, length: MIN, flags: 3 },
        { offset: 2 * MIN, length: MIN, flags: 0 },
      ]);
    } finally {
      await client.disconnect();
    }
    await qemuSawOnlyAlignedRequests();
  });
});
