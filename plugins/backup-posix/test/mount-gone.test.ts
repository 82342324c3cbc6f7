import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChunkedBackupService, type BackupRecord, type ObjectInfo } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';
import { BufferDevice, pattern } from './buffer-device.js';
import { allFiles } from './helpers.js';

/**
 * A store with `createDirectory: false` on a mount whose mount goes away while the store is open
 * (an NFS mount dropping under a long-running `cairn serve`): no write may land on the disk under
 * the mount point. A real tmpfs stands in for the mount (needs root: mount, umount). Without root
 * the tests are skipped with the reason printed; under CI=true a skip is a failure
 * (scripts/no-skip-reporter.js), and CI runs as root.
 */
const PACK = (n: number): string => `packs/${'0123456789abcdef'.repeat(3)}${String(n).padStart(16, '0')}`;

/** Whether `dir` is a mount point now (a line of /proc/self/mountinfo names it). */
function mounted(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === dir);
}

/**
 * Runs `body` with an 8 MiB tmpfs mounted on a fresh directory (`prepare` runs on that directory
 * first, before the mount: what lies on the disk under it), then unmounts it (lazily, if the body
 * did not) and removes the directory. Skips with the reason when it cannot mount.
 */
async function withMount(ctx: { skip: (note?: string) => void }, body: (dir: string) => Promise<void>, prepare?: (dir: string) => void): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-posix-mount-gone-'));
  try {
    prepare?.(dir);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir], { stdio: 'pipe' });
    } catch (err) {
      const reason = String((err as Error).message).split('\n')[0];
      console.warn(`mount-gone test skipped: cannot mount a tmpfs (${reason})`);
      ctx.skip(`cannot mount a tmpfs: ${reason}`);
      return;
    }
    try {
      await body(dir);
    } finally {
      if (mounted(dir)) execFileSync('umount', ['-l', dir]);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('a mount that goes away while the store is open (createDirectory: false)', () => {
  it('on the mount point: every write fails UNAVAILABLE and nothing appears on the disk under it', async (ctx) => {
    await withMount(ctx, async (mp) => {
      const store = await PosixObjectStore.open({ directory: mp, createDirectory: false, reserveBytes: 1024 * 1024 });
      await store.put(PACK(1), Buffer.from('on the mount'));
      await store.put('config', Buffer.from('on the mount'));
      expect(await store.ensureReserve()).toBe(true);
      execFileSync('umount', ['-l', mp]);
      expect(await allFiles(mp)).toEqual(['index/.keep']); // what was under the mount point all along
      // Twice over: the first failure forgets the directories known durable, the second must not recreate them.
      for (let round = 0; round < 2; round++) {
        for (const key of [PACK(2), `packs/${'ab'.repeat(32)}`, 'locks/l1', 'index/i1', 'config2']) {
          const put = store.put(key, Buffer.from('where?'));
          await expect(put, `${key}, round ${round}`).rejects.toMatchObject({ code: 'UNAVAILABLE' });
        }
        for (const key of ['config3', 'locks/l2', PACK(3)]) {
          await expect(store.openWrite(key), `openWrite ${key}, round ${round}`).rejects.toMatchObject({ code: 'UNAVAILABLE' });
        }
      }
      await expect(store.put('config4', Buffer.from('x'))).rejects.toThrow(`${mp} is no longer the directory opened: unmounted or replaced`);
      // The space reserve (a root-level file and its marker) is not made there either.
      expect(await store.ensureReserve()).toBe(false);
      // A delete is a write too, and the disk under the mount point cannot tell whether it was there.
      await expect(store.delete(PACK(1))).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { directory: mp } });
      expect(await allFiles(mp)).toEqual(['index/.keep']);
    }, (mp) => {
      // A key directory the disk under the mount point already has (left by an earlier mishap).
      mkdirSync(join(mp, 'index'));
      writeFileSync(join(mp, 'index', '.keep'), '');
    });
  });

  it('on a subdirectory of the mount: open fails UNAVAILABLE while unmounted, and so does every write of an open store', async (ctx) => {
    await withMount(ctx, async (mp) => {
      const dir = join(mp, 'cairn');
      mkdirSync(dir);
      const store = await PosixObjectStore.open({ directory: dir, createDirectory: false, reserveBytes: 0 });
      await store.put(PACK(1), Buffer.from('on the mount'));
      execFileSync('umount', ['-l', mp]);
      for (const key of [PACK(2), 'config', 'locks/l1']) {
        await expect(store.put(key, Buffer.from('where?')), key).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      }
      await expect(PosixObjectStore.open({ directory: dir, createDirectory: false })).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { option: 'directory' } });
      expect(await allFiles(mp)).toEqual([]);
      // The bare mount point, by contrast, exists (empty) while unmounted: a store opened on it then
      // sits on the disk under it. Pointing `directory` at a subdirectory is what guards against that.
      const bare = await PosixObjectStore.open({ directory: mp, createDirectory: false, reserveBytes: 0 });
      expect(bare.directory).toBe(mp);
    });
  });
});

/** The objects `list(prefix)` yields before it settles, and how it settles (the error, or undefined). */
async function listing(store: PosixObjectStore, prefix: string): Promise<{ yielded: ObjectInfo[]; error: unknown }> {
  const yielded: ObjectInfo[] = [];
  try {
    for await (const info of store.list(prefix)) yielded.push(info);
  } catch (error) {
    return { yielded, error };
  }
  return { yielded, error: undefined };
}

const job = (id: string, size: number) => {
  const now = new Date(0).toISOString();
  const backup = { id, volumeId: 'vol-1', type: 'full', status: 'creating', size, createdAt: now, updatedAt: now, serviceData: {} } as unknown as BackupRecord;
  return { backup, volume: { id: 'vol-1', name: 'vol', size, status: 'available' as const, createdAt: now, metadata: {} }, signal: new AbortController().signal, progress: () => undefined };
};

describe('reads once the mount went away (createDirectory: false): UNAVAILABLE, never "absent"', () => {
  it('on the mount point: get, ranged get, getInto, head, delete, list and sweepTemp fail UNAVAILABLE, also for keys the disk under it holds', async (ctx) => {
    await withMount(ctx, async (mp) => {
      const store = await PosixObjectStore.open({ directory: mp, createDirectory: false, reserveBytes: 0 });
      const data = Buffer.alloc(64 * 1024, 7);
      for (const key of [PACK(1), 'config', 'locks/l1', 'index/i1']) await store.put(key, data);
      execFileSync('umount', ['-l', mp]);
      const gone = { code: 'UNAVAILABLE', details: { directory: mp } };
      // PACK(1) and locks/l1 are nowhere under the mount point; config and index/i1 are there, with other bytes.
      for (const key of [PACK(1), 'locks/l1', 'config', 'index/i1', PACK(9)]) {
        await expect(store.get(key), `get ${key}`).rejects.toMatchObject(gone);
        await expect(store.get(key, { offset: 4096, length: 100 }), `ranged get ${key}`).rejects.toMatchObject(gone);
        const into = Buffer.alloc(8192);
        await expect(store.getInto(key, { offset: 0, length: 4096 }, into), `getInto ${key}`).rejects.toMatchObject(gone);
        await expect(store.getInto(key, { offset: 0, length: 4096 }, into, { once: true }), `getInto once ${key}`).rejects.toMatchObject(gone);
        await expect(store.head(key), `head ${key}`).rejects.toMatchObject(gone);
        await expect(store.delete(key), `delete ${key}`).rejects.toMatchObject(gone);
      }
      for (const prefix of ['', 'packs/', 'locks/', 'index/', 'config', 'nothing/']) {
        const { yielded, error } = await listing(store, prefix);
        expect(error, `list ${JSON.stringify(prefix)}`).toMatchObject(gone);
        expect(yielded, `list ${JSON.stringify(prefix)}`).toEqual([]); // not even what the disk under it holds
      }
      await expect(store.sweepTemp(0)).rejects.toMatchObject(gone);
      await expect(store.get('config')).rejects.toThrow(`${mp} is no longer the directory opened: unmounted or replaced`);
      // The disk under the mount point is left as it was: no delete or sweep removed anything there.
      expect((await allFiles(mp)).sort()).toEqual(['config', 'index/i1', 'index/~tmp-old']);
    }, (mp) => {
      // Objects at the same keys on the disk under the mount point (left by an earlier mishap), and a temporary file.
      writeFileSync(join(mp, 'config'), 'the disk under the mount point');
      mkdirSync(join(mp, 'index'));
      writeFileSync(join(mp, 'index', 'i1'), 'the disk under the mount point');
      writeFileSync(join(mp, 'index', '~tmp-old'), 'a temporary file');
    });
  });

  it('the store still answers NOT_FOUND and empty listings while its mount is there', async (ctx) => {
    await withMount(ctx, async (mp) => {
      const store = await PosixObjectStore.open({ directory: mp, createDirectory: false, reserveBytes: 0 });
      await store.put(PACK(1), Buffer.from('on the mount'));
      await expect(store.get(PACK(2))).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await expect(store.head('config')).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await store.delete(PACK(2));
      expect(await listing(store, 'locks/')).toEqual({ yielded: [], error: undefined });
      expect((await listing(store, 'packs/')).yielded.map((o) => o.key)).toEqual([PACK(1)]);
      expect(await store.sweepTemp(0)).toBe(0);
    });
  });

  it('a chunked repository on a subdirectory of the mount: listing backups, checking one and restoring fail UNAVAILABLE, not "no backups" or NOT_FOUND', async (ctx) => {
    await withMount(ctx, async (mp) => {
      const dir = join(mp, 'cairn');
      mkdirSync(dir);
      const store = await PosixObjectStore.open({ directory: dir, createDirectory: false, reserveBytes: 0 });
      const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: { N: 1024, r: 8, p: 1 } } });
      const data = pattern(2 * 1024 * 1024, 3);
      const b1 = job('b1', data.length);
      const result = await service.backup(b1, { device: new BufferDevice(data) });
      const record = { ...b1.backup, status: 'available' as const, serviceData: result.serviceData };
      expect((await service.listBackups()).map((b) => b.id)).toEqual(['b1']);
      execFileSync('umount', ['-l', mp]);
      const gone = { code: 'UNAVAILABLE', details: { directory: dir } };
      await expect(service.listBackups()).rejects.toMatchObject(gone);
      await expect(service.assertStored(record)).rejects.toMatchObject(gone);
      const target = new BufferDevice(Buffer.alloc(data.length), 'rw');
      await expect(service.restore(record, target)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect(await allFiles(mp)).toEqual([]);
      await service.close?.().catch(() => undefined);
    });
  });
});
