// serveBackup against real NBD clients: nbdinfo, nbdcopy, qemu-img, qemu-storage-daemon, qemu-io.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BackupReader, CairnError, RepositoryKeys, type Repository } from '@cairn/core';
import { NbdClient, serveBackup, type BackupExport } from '../src/index.js';
import { WindowReader } from '../src/backup-export/window-reader.js';
import { CHUNK, KiB, MiB, backupFixture, gatedRepository, type BackupFixture } from './backup-export-fixture.js';
import { outcome, sleep } from './helpers/outcome.js';
import { mustRun, qmpConnect, run, startDaemon, tempDir, type Daemon } from './helpers/peers.js';
import { rawGo, request, simpleReply } from './helpers/raw-nbd.js';

const READ = 0;

let dir: { path: string; remove: () => Promise<void> };
let f: BackupFixture;
let served: BackupExport;
let sock: string;

beforeAll(async () => {
  dir = await tempDir('nbd-bx-');
  f = await backupFixture(dir.path);
  sock = join(dir.path, 'b.sock');
  served = await serveBackup(f.service, f.backup.id, { listen: { path: sock } });
});

afterAll(async () => {
  await served?.close();
  await f?.service.close();
  await dir?.remove();
});

/** nbdinfo --map rows as [offset, length, type]. */
async function map(uri: string): Promise<number[][]> {
  const out = await mustRun('nbdinfo', ['--map', uri]);
  return out.trim().split('\n').map((l) => l.trim().split(/\s+/).slice(0, 3).map(Number));
}

describe('serveBackup: a backup as an NBD export', () => {
  it('serveBackup(service, id) serves the backup read-only under its id, at a URI nbdinfo understands', async () => {
    expect(served).toMatchObject({ exportName: f.backup.id, size: f.source.length, readOnly: true, address: { path: sock } });
    const info = JSON.parse(await mustRun('nbdinfo', ['--json', served.uri])) as { exports: Array<Record<string, unknown>> };
    expect(info.exports[0]).toMatchObject({ 'export-name': f.backup.id, 'export-size': f.source.length, 'is_read_only': true });
  });

  it('nbdinfo --map shows the zero chunks as holes (hole|zero) and the rest as data', async () => {
    const rows = await map(served.uri);
    const holes = rows.filter((r) => r[2] === 3).map((r) => ({ offset: r[0], length: r[1] }));
    expect(holes).toEqual(f.holes);
    expect(rows.filter((r) => r[2] !== 3 && r[2] !== 0)).toEqual([]);
    expect(rows.reduce((n, r) => n + r[1]!, 0)).toBe(f.source.length);
  });

  it('nbdcopy of the export writes a file byte-identical to the source volume and to a restore', async () => {
    const out = join(dir.path, 'nbdcopy.raw');
    await mustRun('nbdcopy', [served.uri, out]);
    expect((await readFile(out)).equals(f.source)).toBe(true);
    const { volume } = await f.manager.restore({ backupId: f.backup.id, newVolume: { name: 'restored' } });
    const a = await f.volumes.attach({ kind: 'volume', id: volume.id }, 'ro');
    expect((await a.device.read(0, volume.size)).equals(await readFile(out))).toBe(true);
    await f.volumes.detach(a.id);
  });

  it('qemu-img convert of the export is byte-identical to the source, and qemu-img compare agrees', async () => {
    const out = join(dir.path, 'convert.raw');
    await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, out]);
    expect((await readFile(out)).equals(f.source)).toBe(true);
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', f.sourcePath, served.uri])).code).toBe(0);
    const other = join(dir.path, 'other.raw');
    const changed = Buffer.from(f.source);
    changed[5 * MiB + 7]! ^= 1;
    await import('node:fs/promises').then((fs) => fs.writeFile(other, changed));
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', other, served.uri])).code).toBe(1);
  });

  it('a qemu-storage-daemon uses the export as the backing node of a new qcow2 and reads the backup through it', async () => {
    const top = join(dir.path, 'top.qcow2');
    await mustRun('qemu-img', ['create', '-f', 'qcow2', top, String(f.source.length)]);
    const qmpSock = join(dir.path, 'qmp.sock');
    const qsdSock = join(dir.path, 'qsd.sock');
    const qsd: Daemon = await startDaemon('qemu-storage-daemon', ['--chardev', `socket,id=m,path=${qmpSock},server=on,wait=off`, '--monitor', 'chardev=m'], [qmpSock]);
    try {
      const qmp = await qmpConnect(qmpSock);
      await qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': 'backup', 'read-only': true, server: { type: 'unix', path: sock }, export: f.backup.id });
      await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: top }, backing: 'backup' });
      await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: qsdSock } } });
      await qmp.execute('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'top', name: 'top', writable: true });
      const topUri = `nbd+unix:///top?socket=${qsdSock}`;
      const out = join(dir.path, 'through-qcow2.raw');
      await mustRun('nbdcopy', [topUri, out]);
      expect((await readFile(out)).equals(f.source)).toBe(true);
      // A write lands in the qcow2; reads elsewhere still come from the backup.
      await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a ${3 * MiB} 65536`, '-c', `read -P 0x5a ${3 * MiB} 65536`, topUri]);
      const client = await NbdClient.connect({ path: qsdSock, exportName: 'top' });
      expect((await client.read(2 * MiB, MiB)).equals(f.source.subarray(2 * MiB, 3 * MiB))).toBe(true);
      await client.disconnect();
      qmp.close();
    } finally {
      await qsd.stop();
    }
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', f.sourcePath, served.uri])).code).toBe(0);
  });

  it('many clients at once read their own ranges correctly', async () => {
    const clients = await Promise.all([0, 1, 2, 3].map(() => NbdClient.connect({ path: sock, exportName: f.backup.id })));
    expect(served.connectionCount).toBeGreaterThanOrEqual(4);
    const reads = await Promise.all(clients.map((c, i) => c.read(i * 3 * MiB + 4096, 4 * MiB + 17)));
    reads.forEach((r, i) => expect(r.equals(f.source.subarray(i * 3 * MiB + 4096, i * 3 * MiB + 4096 + 4 * MiB + 17))).toBe(true));
    await Promise.all(clients.map((c) => c.disconnect()));
  });

  it('a write to a read-only export fails with INVALID_INPUT (EPERM)', async () => {
    const client = await NbdClient.connect({ path: sock, exportName: f.backup.id });
    await expect(client.write(0, Buffer.alloc(4096, 1))).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { nbdErrorName: 'EPERM' } });
    await client.disconnect();
  });

  it('serveBackup with exportName and a TCP port serves on 127.0.0.1 under that name', async () => {
    const tcp = await serveBackup(f.service, f.backup.id, { listen: { port: 0 }, exportName: 'disk0', lock: false });
    try {
      expect(tcp.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/disk0$/);
      const out = join(dir.path, 'tcp.raw');
      await mustRun('nbdcopy', [tcp.uri, out]);
      expect((await readFile(out)).equals(f.source)).toBe(true);
    } finally {
      await tcp.close();
    }
  });

  it('serveBackup of an unknown backup fails with NOT_FOUND; on a non-loopback host with INVALID_INPUT; on a socket in use with CONFLICT', async () => {
    await expect(serveBackup(f.service, 'no-such-backup', { listen: { path: join(dir.path, 'x.sock') } })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(serveBackup(f.service, f.backup.id, { listen: { host: '0.0.0.0', port: 0 } })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(serveBackup(f.service, f.backup.id, { listen: { path: sock } })).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(existsSync(join(dir.path, 'x.sock'))).toBe(false);
  });

  it('gc while a backup is served fails with BUSY (the export holds a shared lock)', async () => {
    await expect(f.service.gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'BUSY' });
  });

  it('close() lets a read in flight finish, then refuses new clients and removes the socket', async () => {
    // A repository whose pack reads wait at a gate, so the read is surely in the server at close().
    const gate = gatedRepository(f.service.repository);
    const path = join(dir.path, 'drain.sock');
    const s = await serveBackup({ repository: gate.repository }, f.backup.id, { listen: { path }, lock: false });
    const client = await NbdClient.connect({ path, exportName: f.backup.id });
    const pending = client.read(0, 8 * MiB);
    await gate.entered();
    const closed = s.close();
    gate.open();
    await closed;
    expect((await pending).equals(f.source.subarray(0, 8 * MiB))).toBe(true);
    expect(existsSync(path)).toBe(false);
    await expect(NbdClient.connect({ path, exportName: f.backup.id })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await s.close(); // idempotent
    await client.disconnect().catch(() => undefined);
  });

  it('close() with a request still unread on the socket ends without waiting for the drain timeout', async () => {
    const path = join(dir.path, 'drain2.sock');
    const s = await serveBackup(f.service, f.backup.id, { listen: { path }, lock: false });
    const client = await NbdClient.connect({ path, exportName: f.backup.id });
    const pending = client.read(0, MiB).then(
      (b) => b.equals(f.source.subarray(0, MiB)),
      (e: { code: string }) => e.code,
    );
    await s.close({ drainTimeoutMs: 60_000 }); // the test's own 15 s timeout fails a hang
    expect([true, 'UNAVAILABLE']).toContain(await pending);
    await client.disconnect().catch(() => undefined);
  }, 15_000);

  it('WindowReader.read in forward steps that straddle windows returns exactly the backup bytes', async () => {
    const reader = await BackupReader.open(f.service.repository, f.backup.id, { readAhead: 4, cacheChunks: 20 });
    const windows = new WindowReader(reader, { windowChunks: 4, windowsAhead: 2, windowsCached: 4 });
    const step = 300 * 1024 + 3;
    const reads: Promise<boolean>[] = [];
    for (let at = 4096; at < f.source.length; at += step) {
      const n = Math.min(step, f.source.length - at);
      reads.push(windows.read(at, n).then((b) => b.equals(f.source.subarray(at, at + n))));
    }
    expect(await Promise.all(reads)).not.toContain(false);
  });

  it('once every export is closed, gc runs: failed and closed exports left no lock behind', async () => {
    await served.close();
    await expect(f.service.gc({ graceMs: 0 })).resolves.toMatchObject({ backups: expect.any(Number) });
    served = await serveBackup(f.service, f.backup.id, { listen: { path: sock } });
  });

  it('the fixture has data chunks and zero chunks (the map test can fail)', () => {
    expect(f.holes.length).toBeGreaterThan(2);
    expect(f.holes.every((h) => h.offset % CHUNK === 0)).toBe(true);
  });
});

/** Polls `done` every 10 ms for up to 5 s. */
async function until(done: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 5000; !done() && Date.now() < deadline; ) await sleep(10);
  expect(done()).toBe(true);
}

describe('serveBackup: a client that leaves while its read waits on the store', () => {
  afterEach(() => vi.restoreAllMocks());

  it('a random read of a client that resets its connection ends CANCELLED at once; another client\'s read waiting on the same store completes once it answers', async () => {
    const reads = vi.spyOn(BackupReader.prototype, 'read');
    const gate = gatedRepository(f.service.repository);
    const s = await serveBackup({ repository: gate.repository }, f.backup.id, { listen: { port: 0 }, lock: false });
    try {
      const address = s.address as { host: string; port: number };
      const at = 4 * MiB + 4096; // random data, read by nobody yet
      const { raw } = await rawGo(address, f.backup.id);
      raw.write(request(READ, 1, at, 64 * KiB));
      await gate.entered();
      const other = await NbdClient.connect({ ...address, exportName: f.backup.id });
      const elsewhere = 12 * MiB + 4096; // random too (not near the first), waiting on the same store
      const pending = other.read(elsewhere, 64 * KiB);
      await until(() => reads.mock.calls.length === 2);
      const leaving = reads.mock.results[0]!.value as Promise<Buffer>;
      raw.socket.resetAndDestroy();
      // The store still hangs: before, the departed client's read waited for it, to build a reply nobody reads.
      expect(await outcome(leaving, 3000)).toBe('CANCELLED');
      expect(await outcome(pending, 100)).toBe('pending');
      gate.open();
      expect((await pending).equals(f.source.subarray(elsewhere, elsewhere + 64 * KiB))).toBe(true);
      // The chunk fetch the departed client started was shared through the cache: it went on.
      expect((await other.read(at, 64 * KiB)).equals(f.source.subarray(at, at + 64 * KiB))).toBe(true);
      await other.disconnect();
    } finally {
      gate.open();
      await s.close();
    }
  });

  it('a sequential read of a client that resets its connection ends CANCELLED at once; the read-ahead window it waited for is still fetched for another client', async () => {
    const windowReads = vi.spyOn(WindowReader.prototype, 'read');
    const ranges = vi.spyOn(BackupReader.prototype, 'readRange');
    const gate = gatedRepository(f.service.repository, false);
    // Windows of 4 chunks (512 KiB): window 0 is [0, 512 KiB), random data.
    const s = await serveBackup({ repository: gate.repository }, f.backup.id, { listen: { port: 0 }, lock: false, readAhead: 4 });
    try {
      const address = s.address as { host: string; port: number };
      const { raw } = await rawGo(address, f.backup.id);
      raw.write(request(READ, 1, 0, 64 * KiB)); // random: straight from the reader
      expect((await simpleReply(raw)).errno).toBe(0);
      expect((await raw.read(64 * KiB)).equals(f.source.subarray(0, 64 * KiB))).toBe(true);
      gate.shut();
      raw.write(request(READ, 2, 64 * KiB, 64 * KiB)); // sequential: waits for window 0
      await gate.entered();
      const other = await NbdClient.connect({ ...address, exportName: f.backup.id });
      const pending = other.read(128 * KiB, 64 * KiB); // the same window
      await until(() => windowReads.mock.calls.length === 3);
      const leaving = windowReads.mock.results[1]!.value as Promise<Buffer>;
      raw.socket.resetAndDestroy();
      expect(await outcome(leaving, 3000)).toBe('CANCELLED');
      expect(await outcome(pending, 100)).toBe('pending');
      gate.open();
      expect((await pending).equals(f.source.subarray(128 * KiB, 192 * KiB))).toBe(true);
      // Every window fetch (window 0 and the read-ahead) ran to its end: none was cancelled.
      expect(await Promise.all(ranges.mock.results.map((r) => outcome(r.value as Promise<Buffer>, 3000)))).toEqual(ranges.mock.results.map(() => 'fulfilled'));
      expect(ranges.mock.calls.every((c) => c[3]?.signal === undefined)).toBe(true);
      await other.disconnect();
    } finally {
      gate.open();
      await s.close();
    }
  });
});

describe('serveBackup when its repository lock lapses', () => {
  afterEach(() => vi.restoreAllMocks());

  /**
   * The fixture's repository with locks of `ttlMs`; once `fail()` is called, the refreshes of the
   * lock the export took fail (a store outage for lock objects).
   */
  function lapsingLocks(ttlMs: number): { repository: Repository; lockId: () => string; fail: () => void } {
    const repo = f.service.repository;
    let id: string | undefined;
    let failing = false;
    const locks = Object.create(repo.locks, {
      acquire: {
        value: async (...[kind, options]: Parameters<Repository['locks']['acquire']>) => {
          const held = await repo.locks.acquire(kind, { ...options, ttlMs });
          id = held.doc.id;
          return held;
        },
      },
    });
    const put = repo.store.put.bind(repo.store);
    vi.spyOn(repo.store, 'put').mockImplementation((key, ...rest) =>
      failing && id !== undefined && key === RepositoryKeys.lock(id) ? Promise.reject(new CairnError('UNAVAILABLE', 'store outage (test)')) : put(key, ...rest),
    );
    return { repository: Object.create(repo, { locks: { value: locks } }) as Repository, lockId: () => id!, fail: () => (failing = true) };
  }

  it('serveBackup whose lock refreshes fail stops once the lock lapsed: onError gets UNAVAILABLE (cause BUSY), clients are cut off, its lock is gone', async () => {
    // 3 s: refreshed every 500 ms and held while more than 1 s is left, so a slow machine's late
    // timer does not lapse it before fail().
    const lapsing = lapsingLocks(3000);
    const errors: CairnError[] = [];
    let reported!: () => void;
    const stopped = new Promise<void>((r) => (reported = r));
    const path = join(dir.path, 'lapse.sock');
    const s = await serveBackup({ repository: lapsing.repository }, f.backup.id, {
      listen: { path },
      onError: (e) => {
        errors.push(e);
        reported();
      },
    });
    try {
      const client = await NbdClient.connect({ path, exportName: f.backup.id });
      expect((await client.read(0, 4096)).equals(f.source.subarray(0, 4096))).toBe(true);
      expect(s.failure).toBeUndefined();
      lapsing.fail();
      // Before, nothing noticed: the export went on serving as if GC could not run.
      // Lapses at most 3 s after fail(), seen by the check every 500 ms; the bound only tells "never".
      expect(await outcome(stopped, 30_000)).toBe('fulfilled');
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ code: 'UNAVAILABLE', driver: 'backup-export', cause: { code: 'BUSY' } });
      expect(s.failure).toBe(errors[0]);
      await expect(client.read(0, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      await s.close(); // the close it started itself
      await expect(NbdClient.connect({ path, exportName: f.backup.id })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect((await f.service.repository.locks.list()).map((l) => l.id)).not.toContain(lapsing.lockId());
      await client.disconnect().catch(() => undefined);
    } finally {
      await s.close();
    }
  });

  it('a read after the lock expired, before the periodic check ran, gets EIO (UNAVAILABLE) and stops the export', async () => {
    // A 10-minute lock: no refresh and no periodic check runs during the test; the clock jumps past the expiry.
    const lapsing = lapsingLocks(600_000);
    const errors: CairnError[] = [];
    const path = join(dir.path, 'lapse2.sock');
    const s = await serveBackup({ repository: lapsing.repository }, f.backup.id, { listen: { path }, onError: (e) => errors.push(e) });
    try {
      const client = await NbdClient.connect({ path, exportName: f.backup.id });
      expect((await client.read(0, 4096)).equals(f.source.subarray(0, 4096))).toBe(true);
      const now = Date.now();
      vi.spyOn(Date, 'now').mockReturnValue(now + 601_000);
      await expect(client.read(MiB, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdErrorName: 'EIO' } });
      vi.mocked(Date.now).mockRestore();
      expect(errors).toMatchObject([{ code: 'UNAVAILABLE', cause: { code: 'BUSY' } }]);
      expect(s.failure).toBe(errors[0]);
      await client.disconnect().catch(() => undefined);
    } finally {
      await s.close();
    }
  });
});
