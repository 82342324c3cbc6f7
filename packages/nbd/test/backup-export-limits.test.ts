// serveBackup passes the server's budgets and timeouts through (maxConnections,
// handshakeTimeoutMs, maxReadBytesPerConnection, maxWriteBytesPerConnection), checked before
// anything is locked or opened.
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BackupReader } from '@cairn/core';
import { NbdClient, OverlayFile, serveBackup, type BackupExport, type ServeBackupOptions } from '../src/index.js';
import { MiB, backupFixture, type BackupFixture } from './backup-export-fixture.js';
import { outcome, sleep } from './helpers/outcome.js';
import { tempDir } from './helpers/peers.js';
import { RawSocket, rawGo, request, simpleReply } from './helpers/raw-nbd.js';

const READ = 0;
const WRITE = 1;
let dir: { path: string; remove: () => Promise<void> };
let f: BackupFixture;
let n = 0;
const open: BackupExport[] = [];

beforeAll(async () => {
  dir = await tempDir('nbd-bxl-');
  f = await backupFixture(dir.path);
});
afterEach(async () => {
  vi.restoreAllMocks();
  for (const e of open.splice(0)) await e.close();
});
afterAll(async () => {
  await f?.service.close();
  await dir?.remove();
});

async function serve(options: Omit<ServeBackupOptions, 'listen'>): Promise<{ served: BackupExport; path: string }> {
  const path = join(dir.path, `l${++n}.sock`);
  const served = await serveBackup(f.service, f.backup.id, { listen: { path }, ...options });
  open.push(served);
  return { served, path };
}

describe('serveBackup server limits', () => {
  const nonsense: Array<[string, Partial<ServeBackupOptions>]> = [
    ['maxConnections: 0', { maxConnections: 0 }],
    ['maxInFlightPerConnection: 0', { maxInFlightPerConnection: 0 }],
    ['maxWriteBytesPerConnection: -1', { maxWriteBytesPerConnection: -1 }],
    ['maxReadBytesPerConnection: 1.5', { maxReadBytesPerConnection: 1.5 }],
    ['handshakeTimeoutMs: NaN', { handshakeTimeoutMs: Number.NaN }],
    ['handshakeTimeoutMs: 2^31 (past the longest timer)', { handshakeTimeoutMs: 2 ** 31 }],
  ];

  it.each(nonsense)('serveBackup with %s is INVALID_INPUT before the repository is locked', async (_what, options) => {
    // gc holds the repository: a check made after locking would see BUSY instead.
    const gc = await f.service.repository.locks.acquire('exclusive', { purpose: 'test: gc' });
    try {
      await expect(serve(options)).rejects.toMatchObject({ code: 'INVALID_INPUT', driver: 'backup-export' });
    } finally {
      await gc.release();
    }
  });

  it('serveBackup({ maxConnections: 1 }) refuses a second client with "too many connections"; once the first leaves, the next is served', async () => {
    const { served, path } = await serve({ maxConnections: 1 });
    const first = await NbdClient.connect({ path, exportName: f.backup.id });
    await expect(NbdClient.connect({ path, exportName: f.backup.id })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/too many connections/) });
    expect(served.connectionCount).toBe(1);
    await first.disconnect();
    const next = await NbdClient.connect({ path, exportName: f.backup.id });
    expect((await next.read(0, 4096)).equals(f.source.subarray(0, 4096))).toBe(true);
    await next.disconnect();
  });

  it('serveBackup({ handshakeTimeoutMs: 200 }) drops a client that does not finish the handshake', async () => {
    const { path } = await serve({ handshakeTimeoutMs: 200 });
    const raw = await RawSocket.connect(path);
    expect((await raw.read(18)).subarray(0, 8).toString()).toBe('NBDMAGIC');
    expect(await outcome(raw.closed, 3000)).toBe('fulfilled');
  });

  it('serveBackup({ maxReadBytesPerConnection: 1 MiB }) starts one 1 MiB read at a time for a client that reads no reply', async () => {
    // Each READ of the backup (random, so no read-ahead) asks the reader for its extents once.
    const allocated = vi.spyOn(BackupReader.prototype, 'allocated');
    const { path } = await serve({ readAhead: 1, maxReadBytesPerConnection: MiB });
    const { raw } = await rawGo(path, f.backup.id);
    raw.socket.pause(); // read no reply: none can leave the server's write buffer
    const N = 8;
    const offsets = Array.from({ length: N }, (_, i) => i * 2 * MiB);
    raw.write(Buffer.concat(offsets.map((o, i) => request(READ, i + 1, o, MiB))));
    await sleep(300);
    expect(allocated).toHaveBeenCalledTimes(1); // the default budget (64 MiB) would start all 8
    raw.socket.resume();
    for (let i = 0; i < N; i++) {
      expect(await simpleReply(raw)).toEqual({ errno: 0, cookie: i + 1 });
      expect((await raw.read(MiB)).equals(f.source.subarray(offsets[i], offsets[i]! + MiB))).toBe(true);
    }
    expect(allocated).toHaveBeenCalledTimes(N);
    raw.socket.destroy();
  });

  it('serveBackup({ maxWriteBytesPerConnection: 1 MiB }) holds one 1 MiB write payload at a time while the overlay is slow', async () => {
    let started = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const write = OverlayFile.prototype.write;
    vi.spyOn(OverlayFile.prototype, 'write').mockImplementation(async function (this: OverlayFile, ...args: Parameters<OverlayFile['write']>) {
      started++;
      await gate;
      return write.apply(this, args);
    });
    const { path } = await serve({ writableOverlay: join(dir.path, `ov${n}.img`), maxWriteBytesPerConnection: MiB });
    const { raw } = await rawGo(path, f.backup.id);
    const N = 4;
    const payloads = Array.from({ length: N }, (_, i) => Buffer.alloc(MiB, i + 1));
    void (async () => {
      for (let i = 0; i < N; i++) {
        if (!raw.socket.write(request(WRITE, i + 1, i * MiB, MiB, payloads[i]))) await new Promise((r) => raw.socket.once('drain', r));
      }
    })();
    for (const deadline = Date.now() + 10_000; started < 1 && Date.now() < deadline; ) await sleep(20);
    await sleep(300);
    expect(started).toBe(1); // the default budget (64 MiB) would take all 4
    release();
    for (let i = 0; i < N; i++) expect((await simpleReply(raw)).errno).toBe(0);
    expect(started).toBe(N);
    raw.socket.destroy();
  });
});
