// Our client and NbdBlockDevice against a real qemu-storage-daemon export of a qcow2 image.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdBlockDevice, NbdClient, STATE_HOLE, STATE_ZERO } from '../src/index.js';
import { mustRun, qmpConnect, startDaemon, tempDir, type Daemon } from './helpers/peers.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
/** What qemu-io writes before the daemon starts: [offset, length, byte]. */
const WRITTEN: Array<[number, number, number]> = [
  [0, 1 * MiB, 0xab],
  [4 * MiB, 64 * 1024, 0xcd],
  [10 * MiB, 3 * MiB, 0x5e],
];

let dir: { path: string; remove: () => Promise<void> };
let daemon: Daemon;
let qmp: Awaited<ReturnType<typeof qmpConnect>>;
let sock: string;
const expected = Buffer.alloc(SIZE);
const opened: Array<{ disconnect?: () => Promise<void>; close?: () => Promise<void> }> = [];

async function client(options: Partial<Parameters<typeof NbdClient.connect>[0]> = {}): Promise<NbdClient> {
  const c = await NbdClient.connect({ path: sock, exportName: 'disk', ...options } as Parameters<typeof NbdClient.connect>[0]);
  opened.push(c);
  return c;
}

beforeAll(async () => {
  dir = await tempDir('nbd-qsd-');
  const img = join(dir.path, 'disk.qcow2');
  sock = join(dir.path, 'nbd.sock');
  const qmpSock = join(dir.path, 'qmp.sock');
  await mustRun('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(SIZE)]);
  const writes = WRITTEN.flatMap(([o, n, b]) => ['-c', `write -P ${b} ${o} ${n}`]);
  await mustRun('qemu-io', ['-f', 'qcow2', ...writes, img]);
  for (const [o, n, b] of WRITTEN) expected.fill(b, o, o + n);
  daemon = await startDaemon(
    'qemu-storage-daemon',
    [
      '--blockdev', `driver=file,node-name=file0,filename=${img}`,
      '--blockdev', 'driver=qcow2,node-name=fmt0,file=file0',
      '--nbd-server', `addr.type=unix,addr.path=${sock}`,
      '--chardev', `socket,id=qmp0,path=${qmpSock},server=on,wait=off`,
      '--monitor', 'chardev=qmp0',
    ],
    [sock, qmpSock],
  );
  qmp = await qmpConnect(qmpSock);
  await qmp.execute('block-dirty-bitmap-add', { node: 'fmt0', name: 'bm0', persistent: true });
  await qmp.execute('block-export-add', { type: 'nbd', id: 'exp0', 'node-name': 'fmt0', name: 'disk', writable: true, bitmaps: ['bm0'] });
});

afterAll(async () => {
  for (const o of opened) await (o.close ?? o.disconnect)!.call(o).catch(() => undefined);
  qmp?.close();
  await daemon?.stop();
  await dir?.remove();
});

describe('NbdClient against qemu-storage-daemon', () => {
  it('read(0, 16 MiB) returns the bytes qemu-io wrote and zeros elsewhere', async () => {
    const c = await client();
    expect(c.size).toBe(SIZE);
    expect(c.structuredReplies).toBe(true);
    const got = await c.read(0, 16 * MiB);
    expect(got.equals(expected.subarray(0, 16 * MiB))).toBe(true);
  });

  it('read(offset, length, into) fills the caller buffer and returns a view of it', async () => {
    const c = await client();
    const into = Buffer.alloc(2 * MiB, 0xff);
    const got = await c.read(4 * MiB - 1000, MiB + 100, into);
    expect(got.buffer).toBe(into.buffer);
    expect(got.byteOffset).toBe(into.byteOffset);
    expect(got.equals(expected.subarray(4 * MiB - 1000, 5 * MiB - 900))).toBe(true);
    expect(into[MiB + 100]).toBe(0xff);
  });

  it('read of 40 MiB is split at the 32 MiB maximum payload and returns exact bytes', async () => {
    const c = await client();
    expect(c.maxPayload).toBe(32 * MiB);
    const got = await c.read(2 * MiB, 40 * MiB);
    expect(got.equals(expected.subarray(2 * MiB, 42 * MiB))).toBe(true);
  });

  it('concurrent reads through one client stay within maxInFlight and each gets exact bytes', async () => {
    const c = await client({ maxInFlight: 4 });
    const offsets = Array.from({ length: 48 }, (_, i) => (i * 1_337_000) % (SIZE - 256 * 1024));
    const results = await Promise.all(offsets.map((o) => c.read(o, 256 * 1024)));
    results.forEach((r, i) => expect(r.equals(expected.subarray(offsets[i], offsets[i]! + 256 * 1024))).toBe(true));
    expect(c.peakInFlight).toBe(4);
    expect(c.inFlight).toBe(0);
  });

  it('mapExtents(base:allocation) flags unwritten ranges as hole|zero', async () => {
    const c = await client();
    const map = await c.mapExtents('base:allocation');
    const holes = map.filter((e) => (e.flags & (STATE_HOLE | STATE_ZERO)) !== 0);
    const data = map.filter((e) => (e.flags & (STATE_HOLE | STATE_ZERO)) === 0);
    expect(data.map((e) => [e.offset, e.length])).toEqual(WRITTEN.map(([o, n]) => [o, n]));
    expect(holes.reduce((s, e) => s + e.length, 0)).toBe(SIZE - WRITTEN.reduce((s, [, n]) => s + n, 0));
  });

  it('blockStatus refuses a range past the end with INVALID_INPUT and answers the last 512 bytes', async () => {
    const c = await client();
    await expect(c.blockStatus('base:allocation', SIZE - 512, 4096)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    const last = await c.blockStatus('base:allocation', SIZE - 512, 512);
    expect(last).toEqual([{ offset: SIZE - 512, length: 512, flags: STATE_HOLE | STATE_ZERO }]);
  });

  it('listMetaContexts(qemu:dirty-bitmap:) lists the exported bitmap', async () => {
    const names = await NbdClient.listMetaContexts({ path: sock }, 'disk', ['qemu:dirty-bitmap:']);
    expect(names).toEqual(['qemu:dirty-bitmap:bm0']);
  });

  it('connect(unknown export) fails with NOT_FOUND', async () => {
    await expect(NbdClient.connect({ path: sock, exportName: 'nope' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('an export name, meta context or query that is not an NBD string is INVALID_INPUT naming it, not sent to qemu', async () => {
    await expect(NbdClient.connect({ path: sock, exportName: 'disk\0' })).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'exportName' } });
    await expect(NbdClient.connect({ path: sock, exportName: 'disk', metaContexts: ['base:allocation', 'qemu:dirty-bitmap:bm0\uD800'] })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      details: { field: 'metaContexts[1]' },
    });
    await expect(NbdClient.listMetaContexts({ path: sock }, 'disk', ['qemu:dirty-bitmap:' + 'x'.repeat(4096)])).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      details: { field: 'queries[0]' },
    });
  });
});

describe('NbdBlockDevice against qemu-storage-daemon', () => {
  it("extents({kind:'allocated'}) returns exactly the written ranges", async () => {
    const dev = await NbdBlockDevice.open({ path: sock, exportName: 'disk', mode: 'ro' });
    opened.push(dev);
    expect(await dev.extents({ kind: 'allocated' })).toEqual(WRITTEN.map(([offset, length]) => ({ offset, length })));
    expect(await dev.extents({ kind: 'allocated' }, { offset: 4 * MiB + 4096, length: MiB })).toEqual([{ offset: 4 * MiB + 4096, length: 60 * 1024 }]);
  });

  it("extents({kind:'changed', since:'bm0'}) returns the 64 KiB granules written through the device", async () => {
    const dev = await NbdBlockDevice.open({ path: sock, exportName: 'disk', metaContexts: ['base:allocation', 'qemu:dirty-bitmap:bm0'] });
    opened.push(dev);
    expect(dev.mode).toBe('rw');
    expect(await dev.extents({ kind: 'changed', since: 'bm0' })).toEqual([]);
    await dev.write(32 * MiB + 512, Buffer.alloc(512, 1));
    await dev.write(40 * MiB, Buffer.alloc(100_000, 2));
    await dev.flush();
    expect(await dev.extents({ kind: 'changed', since: 'bm0' })).toEqual([
      { offset: 32 * MiB, length: 64 * 1024 },
      { offset: 40 * MiB, length: 128 * 1024 },
    ]);
    expect((await dev.read(40 * MiB + 99_999, 2)).equals(Buffer.from([2, 0]))).toBe(true);
  });

  it("extents({kind:'changed'}) for a bitmap the server does not have fails with NOT_FOUND", async () => {
    const dev = await NbdBlockDevice.open({ path: sock, exportName: 'disk', mode: 'ro', metaContexts: ['base:allocation', 'qemu:dirty-bitmap:gone'] });
    opened.push(dev);
    await expect(dev.extents({ kind: 'changed', since: 'gone' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it("extents({kind:'changed'}) without any dirty bitmap negotiated fails with NOT_SUPPORTED", async () => {
    const dev = await NbdBlockDevice.open({ path: sock, exportName: 'disk', mode: 'ro' });
    opened.push(dev);
    await expect(dev.extents({ kind: 'changed', since: 'bm0' })).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
  });
});
