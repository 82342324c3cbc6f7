import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Real small file systems for full-disk tests: tmpfs mounts on fresh directories under the temp
 * dir. Mounting needs root (mount, umount); where that fails, mount() returns undefined and
 * `error` says why, so the tests can skip with the reason. Mount in a group's beforeAll and
 * unmountAll() in its afterAll, not at a module's top level: a run that filters the group out (-t)
 * runs neither, so a top-level mount would be left mounted.
 */
export class TmpfsMounts {
  /** The mount points, in the order mounted. */
  readonly dirs: string[] = [];
  /** The first line of the last failed mount's message; '' while none failed. */
  error = '';

  /** `prefix`: the start of each mount point's name. */
  constructor(private readonly prefix: string) {}

  /** Mounts a tmpfs with `options` (mount -o) on a new directory; returns it, or undefined when it cannot (directory removed, reason in `error`). */
  mount(options: string): string | undefined {
    const dir = mkdtempSync(join(tmpdir(), this.prefix));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { stdio: 'pipe' });
      this.dirs.push(dir);
      return dir;
    } catch (err) {
      this.error = String((err as Error).message).split('\n')[0]!;
      rmdirSync(dir);
      return undefined;
    }
  }

  /** Deletes everything in every mount (between tests), leaving the mount points. */
  empty(): void {
    for (const dir of this.dirs) execFileSync('find', [dir, '-mindepth', '1', '-delete']);
  }

  /** Unmounts every mount and removes its directory. */
  unmountAll(): void {
    for (const dir of this.dirs.splice(0)) {
      execFileSync('umount', [dir]);
      rmdirSync(dir);
    }
  }
}

/**
 * Fills the file system of `dir` (a small tmpfs, say) with a file of its own, `dir/filler`, in 4
 * KiB writes until ENOSPC; returns its path. Any other write error is thrown.
 */
export async function fillFileSystem(dir: string): Promise<string> {
  const path = join(dir, 'filler');
  const fh = await open(path, 'w');
  try {
    for (const block = Buffer.alloc(4096, 7); ; ) await fh.write(block);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOSPC') throw err;
  } finally {
    await fh.close();
  }
  return path;
}
