// Our client writing through a real qemu-nbd, checked afterwards with `qemu-img compare`.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdBlockDevice, NbdClient, STATE_ZERO } from '../src/index.js';
import { mustRun, pattern, run, startDaemon, tempDir, type Daemon } from './helpers/peers.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;

let dir: { path: string; remove: () => Promise<void> };
let rw: Daemon;
let ro: Daemon;
let img: string;
let rwSock: string;
let roSock: string;
const roExpected = Buffer.alloc(SIZE);

beforeAll(async () => {
  dir = await tempDir('nbd-qn-');
  img = join(dir.path, 'rw.qcow2');
  const roImg = join(dir.path, 'ro.qcow2');
  rwSock = join(dir.path, 'rw.sock');
  roSock = join(dir.path, 'ro.sock');
  for (const f of [img, roImg]) await mustRun('qemu-img', ['create', '-q', '-f', 'qcow2', f, String(SIZE)]);
  await mustRun('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x77 0 ${2 * MiB}`, img]);
  await mustRun('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x19 ${MiB} ${3 * MiB}`, roImg]);
  roExpected.fill(0x19, MiB, 4 * MiB);
  rw = await startDaemon('qemu-nbd', ['-k', rwSock, '-f', 'qcow2', '-x', 'disk', '--discard=unmap', img], [rwSock]);
  ro = await startDaemon('qemu-nbd', ['-k', roSock, '-f', 'qcow2', '-x', 'disk', '-r', '-t', '-e', '8', roImg], [roSock]);
});

afterAll(async () => {
  await rw?.stop();
  await ro?.stop();
  await dir?.remove();
});

describe('NbdClient against qemu-nbd', () => {
  it('write, writeZeroes, trim and flush land exactly: qemu-img compare matches after disconnect', async () => {
    const expected = Buffer.alloc(SIZE);
    expected.fill(0x77, 0, 2 * MiB);
    const c = await NbdClient.connect({ path: rwSock, exportName: 'disk' });
    expect(c.canWriteZeroes && c.canTrim && c.canFlush && c.canFua).toBe(true);

    const a = pattern(3 * MiB, 1);
    await c.write(MiB, a);
    a.copy(expected, MiB);
    const b = pattern(1000, 2);
    await c.write(8 * MiB + 100, b, { fua: true });
    b.copy(expected, 8 * MiB + 100);
    const d = pattern(256 * 1024, 3);
    await c.write(20 * MiB, d);
    d.copy(expected, 20 * MiB);
    // Zeroing with holes allowed (NO_HOLE off), and keeping the range allocated (NO_HOLE on).
    await c.writeZeroes(1.5 * MiB, MiB);
    expected.fill(0, 1.5 * MiB, 2.5 * MiB);
    await c.writeZeroes(20 * MiB + 64 * 1024, 64 * 1024, { noHole: true });
    expected.fill(0, 20 * MiB + 64 * 1024, 20 * MiB + 128 * 1024);
    await c.trim(28 * MiB, MiB);
    await c.flush();

    const zeroed = await c.mapExtents('base:allocation', 1.5 * MiB, MiB);
    expect(zeroed.every((e) => (e.flags & STATE_ZERO) !== 0)).toBe(true);
    expect((await c.read(0, SIZE)).equals(expected)).toBe(true);
    await c.disconnect();
    await expect(c.read(0, 512)).rejects.toMatchObject({ code: 'INVALID_INPUT' });

    await rw.stop();
    const raw = join(dir.path, 'expected.raw');
    await writeFile(raw, expected);
    const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', img, raw]);
    expect(cmp.stderr).toBe('');
    expect(cmp.code).toBe(0);
    // The check can fail: one flipped byte makes compare report a difference.
    expected[8 * MiB + 100] ^= 0xff;
    await writeFile(raw, expected);
    expect((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', img, raw])).code).toBe(1);
  });

  it('write to a read-only qemu-nbd export fails with INVALID_INPUT', async () => {
    const c = await NbdClient.connect({ path: roSock, exportName: 'disk' });
    expect(c.readOnly).toBe(true);
    // qemu 7.2 answers EINVAL here (our own server answers EPERM; see server-interop.test.ts).
    await expect(c.write(0, Buffer.alloc(512, 1))).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect((await c.read(0, 4 * MiB)).equals(roExpected.subarray(0, 4 * MiB))).toBe(true);
    await c.disconnect();
  });

  it('connect({ maxInFlight: 0 | 1.5 }) fails with INVALID_INPUT, and a good one still connects', async () => {
    for (const maxInFlight of [0, 1.5, -1]) {
      await expect(NbdClient.connect({ path: roSock, exportName: 'disk', maxInFlight })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    const c = await NbdClient.connect({ path: roSock, exportName: 'disk', maxInFlight: 1 });
    expect((await c.read(MiB, 4096)).equals(roExpected.subarray(MiB, MiB + 4096))).toBe(true);
    await c.disconnect();
  });

  it('structuredReplies:false reads exact bytes through simple replies', async () => {
    const c = await NbdClient.connect({ path: roSock, exportName: 'disk', structuredReplies: false });
    expect(c.structuredReplies).toBe(false);
    expect(c.metaContexts.size).toBe(0);
    expect((await c.read(0, SIZE)).equals(roExpected)).toBe(true);
    await expect(c.blockStatus('base:allocation', 0, 512)).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
    await c.disconnect();
  });

  it("NbdBlockDevice refuses an rw attach of a read-only export with INVALID_INPUT and writes on 'ro' locally", async () => {
    const client = await NbdClient.connect({ path: roSock, exportName: 'disk' });
    expect(() => new NbdBlockDevice(client, { mode: 'rw' })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
    const dev = new NbdBlockDevice(client);
    expect(dev.mode).toBe('ro');
    await expect(dev.write(0, Buffer.alloc(512))).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(await dev.extents({ kind: 'allocated' })).toEqual([{ offset: MiB, length: 3 * MiB }]);
    await dev.close();
    await dev.close();
  });
});
