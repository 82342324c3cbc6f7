// Our NbdServer against real clients: nbdinfo, nbdcopy, qemu-io, qemu-img, and our own client.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MemoryVolumeDriver, type BlockDevice } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdBlockDevice, NbdClient, NbdServer, blockDeviceBackend, type NbdBackend } from '../src/index.js';
import { mustRun, pattern, run, tempDir } from './helpers/peers.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** Data written into the served memory volume: [offset, length, seed]. */
const DATA: Array<[number, number, number]> = [
  [0, MiB, 1],
  [3 * MiB, 64 * 1024, 2],
  [8 * MiB, 2 * MiB, 3],
];
const RO_SIZE = 4 * MiB;

let dir: { path: string; remove: () => Promise<void> };
let server: NbdServer;
let device: BlockDevice;
let checkpointId: string;
let sock: string;
const roBytes = pattern(RO_SIZE, 9);
const uri = (name: string): string => `nbd+unix:///${name}?socket=${sock}`;

/** A read-only backend over a buffer that reports no holes. */
const roBackend: NbdBackend = { size: RO_SIZE, readOnly: true, read: async (o, n) => Buffer.from(roBytes.subarray(o, o + n)) };

beforeAll(async () => {
  dir = await tempDir('nbd-srv-');
  sock = join(dir.path, 'srv.sock');
  const driver = new MemoryVolumeDriver({ pageSize: 4096 });
  const vol = await driver.createVolume({ name: 'v', size: SIZE });
  device = (await driver.attach({ kind: 'volume', id: vol.id }, 'rw')).device;
  for (const [o, n, seed] of DATA) await device.write(o, pattern(n, seed));
  checkpointId = (await driver.changedBlockTracking!.createCheckpoint(vol.id)).id;
  server = new NbdServer({
    exports: [
      { name: 'disk', backend: blockDeviceBackend(device, { checkpoints: [checkpointId] }), description: 'memory volume' },
      { name: 'ro', backend: roBackend },
    ],
  });
  await server.listen({ path: sock });
});

afterAll(async () => {
  await server?.close();
  await dir?.remove();
});

describe('NbdServer with real NBD clients', () => {
  it('nbdinfo --json reports the export size, name and base:allocation', async () => {
    const info = JSON.parse(await mustRun('nbdinfo', ['--json', uri('disk')])) as {
      protocol: string;
      structured: boolean;
      exports: Array<Record<string, unknown>>;
    };
    expect(info.protocol).toBe('newstyle-fixed');
    expect(info.structured).toBe(true);
    expect(info.exports[0]).toMatchObject({
      'export-name': 'disk',
      'export-size': SIZE,
      description: 'memory volume',
      contexts: ['base:allocation', `qemu:dirty-bitmap:${checkpointId}`],
      is_read_only: false,
      can_flush: true,
      can_zero: true,
      block_size_maximum: 32 * MiB,
    });
  });

  it('nbdinfo --map shows data where written and holes between', async () => {
    const out = await mustRun('nbdinfo', ['--map', uri('disk')]);
    const rows = out.trim().split('\n').map((l) => l.trim().split(/\s+/).slice(0, 3).map(Number));
    const dataRows = DATA.map(([o, n]) => [o, n, 0]);
    const holeRows = [
      [MiB, 2 * MiB, 3],
      [3 * MiB + 64 * 1024, 5 * MiB - 64 * 1024, 3],
      [10 * MiB, 6 * MiB, 3],
    ];
    expect(rows).toEqual([dataRows[0], holeRows[0], dataRows[1], holeRows[1], dataRows[2], holeRows[2]]);
  });

  it('nbdinfo --list lists every export (NBD_OPT_LIST), as does NbdClient.listExports', async () => {
    const out = await mustRun('nbdinfo', ['--list', '--json', `nbd+unix://?socket=${sock}`]);
    const names = (JSON.parse(out) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']);
    expect(names.sort()).toEqual(['disk', 'ro']);
    expect((await NbdClient.listExports({ path: sock })).sort()).toEqual(['disk', 'ro']);
  });

  it('nbdcopy from our server to a file is byte-identical to the volume', async () => {
    const out = join(dir.path, 'copy.raw');
    await mustRun('nbdcopy', [uri('disk'), out]);
    const copied = await readFile(out);
    expect(copied.length).toBe(SIZE);
    expect(copied.equals(await device.read(0, SIZE))).toBe(true);
  });

  it('qemu-io writes through our server land in the backend and qemu-img compare sees the same bytes', async () => {
    await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x42 ${5 * MiB} 65536`, uri('disk')]);
    expect((await device.read(5 * MiB, 65536)).equals(Buffer.alloc(65536, 0x42))).toBe(true);
    const out = join(dir.path, 'after.raw');
    await mustRun('nbdcopy', [uri('disk'), out]);
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri('disk'), out])).code).toBe(0);
  });

  it('nbdinfo --map=qemu:dirty-bitmap:<checkpoint> shows what changed since the checkpoint', async () => {
    await device.write(12 * MiB, Buffer.alloc(4096, 7));
    const out = await mustRun('nbdinfo', [`--map=qemu:dirty-bitmap:${checkpointId}`, uri('disk')]);
    const dirty = out
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).map(Number))
      .filter((r) => r[2] === 1)
      .map((r) => [r[0], r[1]]);
    expect(dirty).toContainEqual([12 * MiB, 4096]);
    const dev = await NbdBlockDevice.open({ path: sock, exportName: 'disk', mode: 'ro', metaContexts: ['base:allocation', `qemu:dirty-bitmap:${checkpointId}`] });
    expect(await dev.extents({ kind: 'changed', since: checkpointId })).toEqual(await device.extents({ kind: 'changed', since: checkpointId }));
    expect(await dev.extents({ kind: 'allocated' })).toEqual(await device.extents({ kind: 'allocated' }));
    await dev.close();
  });

  it('concurrent clients (ours and nbdcopy) each read exact bytes', async () => {
    const truth = await device.read(0, SIZE);
    const clients = await Promise.all(Array.from({ length: 4 }, () => NbdClient.connect({ path: sock, exportName: 'disk', maxInFlight: 8 })));
    const copy = join(dir.path, 'concurrent.raw');
    const [reads] = await Promise.all([
      Promise.all(clients.map((c, i) => c.read(i * MiB, 12 * MiB))),
      mustRun('nbdcopy', ['--connections=2', uri('disk'), copy]),
    ]);
    reads.forEach((r, i) => expect(r.equals(truth.subarray(i * MiB, i * MiB + 12 * MiB))).toBe(true));
    expect((await readFile(copy)).equals(truth)).toBe(true);
    await Promise.all(clients.map((c) => c.disconnect()));
  });

  it('NbdServer on 127.0.0.1:0 serves our client and nbdinfo over TCP', async () => {
    const tcp = new NbdServer({ exports: [{ name: 'ro', backend: roBackend }] });
    const addr = await tcp.listen({ port: 0 });
    if ('path' in addr) throw new Error('expected a TCP address');
    expect(addr.host).toBe('127.0.0.1');
    const c = await NbdClient.connect({ host: addr.host, port: addr.port, exportName: 'ro' });
    expect((await c.read(MiB, MiB)).equals(roBytes.subarray(MiB, 2 * MiB))).toBe(true);
    await c.disconnect();
    const info = JSON.parse(await mustRun('nbdinfo', ['--json', `nbd://127.0.0.1:${addr.port}/ro`])) as { exports: Array<Record<string, unknown>> };
    expect(info.exports[0]).toMatchObject({ 'export-size': RO_SIZE, is_read_only: true });
    await tcp.close();
  });

  it('write to the read-only export fails with EPERM (INVALID_INPUT) and nbdcopy into it fails', async () => {
    const c = await NbdClient.connect({ path: sock, exportName: 'ro' });
    expect(c.readOnly).toBe(true);
    await expect(c.write(0, Buffer.alloc(512, 1))).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdError: 1, nbdErrorName: 'EPERM' } });
    await expect(c.trim(0, 512)).rejects.toMatchObject({ code: 'NOT_SUPPORTED' });
    expect((await c.read(0, RO_SIZE)).equals(roBytes)).toBe(true);
    await c.disconnect();
    const src = join(dir.path, 'copy.raw');
    const r = await run('nbdcopy', [src, uri('ro')]);
    expect(r.code).not.toBe(0);
  });
});
