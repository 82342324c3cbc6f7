// serveBackup with a writable copy-on-write overlay: writes read back, survive a restart with the
// same overlay file, and never touch the repository.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, OverlayFile, serveBackup, type BackupExport } from '../src/index.js';
import { KiB, MiB, backupFixture, treeDigest, type BackupFixture } from './backup-export-fixture.js';
import { mustRun, run, tempDir } from './helpers/peers.js';

let dir: { path: string; remove: () => Promise<void> };
let f: BackupFixture;
let served: BackupExport;
let sock: string;
let overlayPath: string;
let repoBefore: string[];
/** What the export must read as: the source with every write of the tests applied. */
let expected: Buffer;

const serve = (): Promise<BackupExport> => serveBackup(f.service, f.backup.id, { listen: { path: sock }, writableOverlay: overlayPath });

beforeAll(async () => {
  dir = await tempDir('nbd-bxo-');
  f = await backupFixture(dir.path);
  expected = Buffer.from(f.source);
  sock = join(dir.path, 'ov.sock');
  overlayPath = join(dir.path, 'overlay.img');
  repoBefore = await treeDigest(f.repoDir);
  served = await serve();
});

afterAll(async () => {
  await served?.close();
  await f?.service.close();
  await dir?.remove();
});

describe('serveBackup with writableOverlay', () => {
  it('the export is writable and qemu-io writes (unaligned, across blocks) read back with the backup around them', async () => {
    expect(served.readOnly).toBe(false);
    const at = MiB + 512;
    const length = 70_000;
    await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x33 ${at} ${length}`, served.uri]);
    expected.fill(0x33, at, at + length);
    const check = await run('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x33 ${at} ${length}`, served.uri]);
    expect(check.stdout).not.toMatch(/Pattern verification failed/);
    expect(check.code).toBe(0);
    const client = await NbdClient.connect({ path: sock, exportName: f.backup.id });
    expect((await client.read(MiB - 64 * KiB, 256 * KiB)).equals(expected.subarray(MiB - 64 * KiB, MiB + 192 * KiB))).toBe(true);
    await client.disconnect();
  });

  it('concurrent partial writes into one new overlay block from two clients both land', async () => {
    const block = 9 * MiB; // a zero region of the backup
    const clients = await Promise.all([0, 1].map(() => NbdClient.connect({ path: sock, exportName: f.backup.id })));
    const a = Buffer.alloc(4096, 0xa1);
    const b = Buffer.alloc(4096, 0xb2);
    await Promise.all([clients[0]!.write(block + 4096, a), clients[1]!.write(block + 40_960, b, { fua: true })]);
    a.copy(expected, block + 4096);
    b.copy(expected, block + 40_960);
    expect((await clients[0]!.read(block, 64 * KiB)).equals(expected.subarray(block, block + 64 * KiB))).toBe(true);
    await Promise.all(clients.map((c) => c.disconnect()));
  });

  it('nbdinfo --map reports written overlay blocks as data inside a hole of the backup', async () => {
    const out = await mustRun('nbdinfo', ['--map', served.uri]);
    const rows = out.trim().split('\n').map((l) => l.trim().split(/\s+/).slice(0, 3).map(Number));
    const at = (offset: number): number => rows.find((r) => r[0]! <= offset && offset < r[0]! + r[1]!)![2]!;
    expect(at(9 * MiB)).toBe(0);
    expect(at(9 * MiB + 64 * KiB)).toBe(3);
    expect(at(13 * MiB)).toBe(3);
  });

  it('qemu-io write -z over backup data reads back as zeros', async () => {
    await mustRun('qemu-io', ['-f', 'raw', '-c', `write -z ${12 * MiB} ${128 * KiB}`, served.uri]);
    expected.fill(0, 12 * MiB, 12 * MiB + 128 * KiB);
    const client = await NbdClient.connect({ path: sock, exportName: f.backup.id });
    expect((await client.read(12 * MiB - 4096, 136 * KiB)).equals(expected.subarray(12 * MiB - 4096, 12 * MiB + 132 * KiB))).toBe(true);
    await client.disconnect();
  });

  it('after close() and serveBackup again with the same overlay file, every write is still there (nbdcopy)', async () => {
    await served.close();
    served = await serve();
    await mustRun('nbdcopy', [served.uri, join(dir.path, 'after-restart.raw')]);
    expect((await readFile(join(dir.path, 'after-restart.raw'))).equals(expected)).toBe(true);
    expect((await readFile(join(dir.path, 'after-restart.raw'))).equals(f.source)).toBe(false);
  });

  it('the repository holds exactly the same objects, byte for byte, as before any write', async () => {
    await served.close();
    expect(await treeDigest(f.repoDir)).toEqual(repoBefore);
    served = await serve();
  });

  it('the overlay of one backup served with another backup fails with CONFLICT; a second open in this process too', async () => {
    const second = await f.manager.backup({ volumeId: f.backup.volumeId, name: 'second' });
    await expect(serveBackup(f.service, second.id, { listen: { path: join(dir.path, 'x.sock') }, writableOverlay: overlayPath })).rejects.toMatchObject({ code: 'CONFLICT' });
    await served.close();
    await expect(serveBackup(f.service, second.id, { listen: { path: join(dir.path, 'x.sock') }, writableOverlay: overlayPath })).rejects.toMatchObject({ code: 'CONFLICT' });
    served = await serve();
  });

  it('OverlayFile.open of a map that is not an overlay map fails with CORRUPT; of a data file without its map with CONFLICT', async () => {
    const base = async (): Promise<Buffer> => Buffer.alloc(0);
    const p = join(dir.path, 'junk.img');
    await writeFile(p, Buffer.alloc(4096));
    await writeFile(`${p}.map`, Buffer.alloc(8192, 0x41));
    await expect(OverlayFile.open(p, { backupId: 'b', size: 4096 }, base)).rejects.toMatchObject({ code: 'CORRUPT' });
    const lone = join(dir.path, 'lone.img');
    await writeFile(lone, Buffer.alloc(4096));
    await expect(OverlayFile.open(lone, { backupId: 'b', size: 4096 }, base)).rejects.toMatchObject({ code: 'CONFLICT' });
    await expect(OverlayFile.open(join(dir.path, 'bs.img'), { backupId: 'b', size: 4096 }, base, { blockSize: 1000 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });

  it('OverlayFile.open of an overlay another process has open fails with CONFLICT; once that process is killed, it opens with its flushed writes', async () => {
    // Two processes with one overlay each keep their own map in memory: the one that flushes last
    // overwrites the other's map bits, and flushed writes read back as the backup's data.
    const p = join(dir.path, 'shared.img');
    const identity = { backupId: 'b', size: MiB };
    const base = async (_o: number, l: number): Promise<Buffer> => Buffer.alloc(l);
    const dist = resolve(dirname(fileURLToPath(import.meta.url)), '../dist/index.js');
    const holder = spawn(
      process.execPath,
      ['--input-type=module', '-e', `import { OverlayFile } from ${JSON.stringify(dist)};
        const o = await OverlayFile.open(${JSON.stringify(p)}, ${JSON.stringify(identity)}, async (_o, l) => Buffer.alloc(l));
        await o.write(0, Buffer.alloc(4096, 0x11), true);
        process.stdout.write('held'); setInterval(() => {}, 1000);`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await Promise.race([once(holder.stdout!, 'data'), once(holder, 'exit').then(() => Promise.reject(new Error('the holder exited')))]);
      await expect(OverlayFile.open(p, identity, base)).rejects.toMatchObject({ code: 'CONFLICT' });
    } finally {
      holder.kill('SIGKILL');
      await once(holder, 'exit').catch(() => undefined);
    }
    const overlay = await OverlayFile.open(p, identity, base);
    try {
      expect(overlay.written(0, MiB)).toEqual([{ offset: 0, length: overlay.blockSize }]);
      expect((await overlay.read(0, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
    } finally {
      await overlay.close();
    }
    // Closed: the lock is gone, so the next open (here, in this process) succeeds.
    await (await OverlayFile.open(p, identity, base)).close();
  });
});
