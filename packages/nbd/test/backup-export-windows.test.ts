// The export's read-ahead windows (window-reader.ts): what unsent replies may hold, per-connection
// sequential detection, and a damaged window not being fetched again and again. Memory is
// measured in this process after a forced GC; store traffic by counting the store's gets.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BackupReader, CairnError, type Repository } from '@cairn/core';
import { NbdClient, serveBackup, type BackupExport, type ServeBackupOptions } from '../src/index.js';
import { CHUNK, KiB, MiB, backupFixture, corruptChunk, type BackupFixture } from './backup-export-fixture.js';
import { sleep } from './helpers/outcome.js';
import { tempDir } from './helpers/peers.js';
import { rawGo, request } from './helpers/raw-nbd.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const READ = 0;
let dir: { path: string; remove: () => Promise<void> };
let f: BackupFixture;
let n = 0;
const open: BackupExport[] = [];

beforeAll(async () => {
  dir = await tempDir('nbd-bxw-');
  f = await backupFixture(join(dir.path, 'a'), { size: 64 * MiB });
}, 120_000);
afterEach(async () => {
  vi.restoreAllMocks();
  for (const e of open.splice(0)) await e.close();
});
afterAll(async () => {
  await f?.service.close();
  await dir?.remove();
});

async function serve(service: { readonly repository: Repository }, backupId: string, options: Omit<ServeBackupOptions, 'listen'> = {}): Promise<string> {
  const path = join(dir.path, `w${++n}.sock`);
  open.push(await serveBackup(service, backupId, { listen: { path }, ...options }));
  return path;
}

/** Bytes of ArrayBuffers alive after full GCs (backing stores are freed concurrently, after the GC: hence the waits). */
async function arrayBuffersAlive(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(20);
  }
  return process.memoryUsage().arrayBuffers;
}

describe('backup export write-zeroes', () => {
  it('zeroing 60 MiB through a writable export leaves the overlay data file sparse; the range reads as zeros after serving it again', async () => {
    const overlay = join(dir.path, `ov${++n}.img`);
    const [from, length] = [2 * MiB, 60 * MiB];
    let path = await serve(f.service, f.backup.id, { writableOverlay: overlay });
    let client = await NbdClient.connect({ path, exportName: f.backup.id });
    await client.writeZeroes(from, length); // no NBD_CMD_FLAG_NO_HOLE: the server may leave holes
    await client.disconnect();
    await open.pop()!.close();
    expect((await stat(overlay)).blocks * 512).toBeLessThan(MiB); // was 60 MiB of written zeros
    path = await serve(f.service, f.backup.id, { writableOverlay: overlay });
    client = await NbdClient.connect({ path, exportName: f.backup.id });
    try {
      for (let at = from; at < from + length; at += 4 * MiB) expect((await client.read(at, 4 * MiB)).equals(Buffer.alloc(4 * MiB))).toBe(true);
      expect((await client.read(0, from)).equals(f.source.subarray(0, from))).toBe(true);
    } finally {
      await client.disconnect();
    }
  });
});

describe('backup export read-ahead windows', () => {
  it('small replies a client never reads hold their own bytes, not the 2 MiB windows they were read from', async () => {
    // 2 MiB windows (16 chunks); one 64 KiB read at the start of each: every read after the
    // first is sequential (the next window), so each is served from a window of its own.
    const windowSize = 16 * CHUNK;
    const windows = f.source.length / windowSize;
    let settled = 0;
    const readRange = BackupReader.prototype.readRange;
    const spy = vi.spyOn(BackupReader.prototype, 'readRange').mockImplementation(function (this: BackupReader, ...args: Parameters<BackupReader['readRange']>) {
      return readRange.apply(this, args).finally(() => settled++);
    });
    const path = await serve(f.service, f.backup.id, { readAhead: 16, maxInFlightPerConnection: windows });
    const before = await arrayBuffersAlive();
    const { raw } = await rawGo(path, f.backup.id);
    raw.socket.pause(); // read no reply: they wait in the server once the kernel's buffer is full
    raw.write(Buffer.concat(Array.from({ length: windows }, (_, i) => request(READ, i + 1, i * windowSize, 64 * KiB))));
    // Every window after the first is fetched (the first read is random: straight to the reader).
    for (const deadline = Date.now() + 30_000; settled < windows - 1 && Date.now() < deadline; ) await sleep(20);
    expect(settled).toBe(windows - 1);
    spy.mockClear(); // the spy's record of results would keep every window alive
    let most = 0;
    for (let i = 0; i < 5; i++) {
      await sleep(50);
      most = Math.max(most, (await arrayBuffersAlive()) - before);
    }
    // Replies: 32 × 64 KiB = 2 MiB. Windows: 6 cached + 2 being read ahead = 16 MiB. Views of
    // the windows would keep ~30 more of them (60 MiB) alive.
    expect(most).toBeLessThan(32 * MiB);
    raw.socket.destroy();
  });

  it('two clients reading the same window do not make each other sequential: a lone 4 KiB read fetches no window', async () => {
    const readRange = vi.spyOn(BackupReader.prototype, 'readRange');
    const path = await serve(f.service, f.backup.id);
    const a = await NbdClient.connect({ path, exportName: f.backup.id });
    const b = await NbdClient.connect({ path, exportName: f.backup.id });
    try {
      expect((await a.read(8 * MiB, 4 * KiB)).equals(f.source.subarray(8 * MiB, 8 * MiB + 4 * KiB))).toBe(true);
      expect((await b.read(8 * MiB + 64 * KiB, 4 * KiB)).equals(f.source.subarray(8 * MiB + 64 * KiB, 8 * MiB + 68 * KiB))).toBe(true);
      expect(readRange).not.toHaveBeenCalled();
      // The same client's next read in that window is sequential: its window and two ahead.
      expect((await a.read(8 * MiB + 128 * KiB, 4 * KiB)).equals(f.source.subarray(8 * MiB + 128 * KiB, 8 * MiB + 132 * KiB))).toBe(true);
      expect(readRange).toHaveBeenCalledTimes(3);
    } finally {
      await a.disconnect();
      await b.disconnect();
    }
  });

  it('a window whose fetch failed for now (UNAVAILABLE, not damage) is fetched again by the next read in it', async () => {
    const readRange = BackupReader.prototype.readRange;
    let refused = false;
    const spy = vi.spyOn(BackupReader.prototype, 'readRange').mockImplementation(function (this: BackupReader, start: number, length: number) {
      if (start === 12 * MiB && !refused) {
        refused = true;
        return Promise.reject(new CairnError('UNAVAILABLE', 'the store went away for a moment', { driver: 'test' }));
      }
      return readRange.call(this, start, length);
    });
    const path = await serve(f.service, f.backup.id);
    const client = await NbdClient.connect({ path, exportName: f.backup.id });
    try {
      const expectRead = async (at: number) => expect((await client.read(at, 4 * KiB)).equals(f.source.subarray(at, at + 4 * KiB))).toBe(true);
      await expectRead(8 * MiB); // not sequential yet: read directly
      await expectRead(8 * MiB + 128 * KiB); // sequential: [8, 12) MiB and two windows ahead, [12, 16) refused
      await vi.waitFor(() => expect(refused).toBe(true));
      await expectRead(12 * MiB); // in the refused window: fetched again
      expect(spy.mock.calls.filter(([start]) => start === 12 * MiB)).toHaveLength(2);
    } finally {
      await client.disconnect();
    }
  });

  it('a damaged chunk: its window is fetched once, then read chunk by chunk; reading 16 MiB around it costs at most one window more than without damage', async () => {
    // A backup of its own (damaged below), read through a store that counts the bytes it gives.
    const g = await backupFixture(join(dir.path, 'b'), { size: 32 * MiB });
    try {
      const counted = countingRepository(g.service.repository);
      const readAround = async (): Promise<{ bytes: number; failed: number }> => {
        const path = await serve({ repository: counted.repository }, g.backup.id);
        const client = await NbdClient.connect({ path, exportName: g.backup.id });
        const start = counted.bytes();
        let failed = 0;
        for (let at = 4 * MiB; at < 20 * MiB; at += 256 * KiB) {
          const got = await client.read(at, 256 * KiB).catch(() => undefined);
          if (got) expect(got.equals(g.source.subarray(at, at + 256 * KiB))).toBe(true);
          else failed++;
        }
        await client.disconnect();
        await open.pop()!.close();
        return { bytes: counted.bytes() - start, failed };
      };
      const clean = await readAround();
      expect(clean.failed).toBe(0);
      await corruptChunk(g, (12 * MiB) / CHUNK); // in the window [12 MiB, 16 MiB)
      const damaged = await readAround();
      expect(damaged.failed).toBe(1); // only the 256 KiB read holding the chunk
      // At most one window more than without damage (the damaged one, read again chunk by
      // chunk); fetching it again for every read before and inside it costs ~20 MiB more here.
      expect(damaged.bytes).toBeLessThan(clean.bytes + 4 * MiB);
    } finally {
      await g.service.close();
    }
  });
});

/** `repo` whose store counts the bytes its gets return (`get` and `getInto`). */
function countingRepository(repo: Repository): { repository: Repository; bytes: () => number } {
  let bytes = 0;
  const store = Object.create(repo.store, {
    get: {
      value: async (key: string, range?: { offset: number; length: number }) => {
        const got = await repo.store.get(key, range);
        bytes += got.length;
        return got;
      },
    },
    getInto: {
      value: async (key: string, range: { offset: number; length: number }, into: Buffer) => {
        const got = await repo.store.getInto!(key, range, into);
        bytes += range.length;
        return got;
      },
    },
  });
  return { repository: Object.create(repo, { store: { value: store } }) as Repository, bytes: () => bytes };
}
