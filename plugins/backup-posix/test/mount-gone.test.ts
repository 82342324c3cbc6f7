import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
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
      await store.delete(PACK(1));
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
