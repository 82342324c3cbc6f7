import { execFileSync } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/**
 * `cairn backup create` onto a repository whose file system is full: UNAVAILABLE (exit 6), the
 * errno in `details`, a hint saying what to do, the record left `error`, and the next backup
 * fine once space is freed. The repository (and with it the catalog: the default target's) is on
 * a 16 MiB tmpfs, the volumes are not. Needs root to mount; skipped otherwise, except under
 * CI=true, where not being able to mount fails.
 */
const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('a backup onto a full repository disk', () => {
  let cwd: string;
  let disk: string | undefined;
  const filler = () => join(disk!, 'filler');

  beforeAll(async () => {
    cwd = await tempDir();
    const mountpoint = join(cwd, 'disk');
    await mkdir(mountpoint);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mountpoint]);
    disk = mountpoint;
    await writeFile(
      join(cwd, 'cairn.config.json'),
      JSON.stringify({
        volumeDrivers: { file: { plugin: 'file', options: { directory: join(cwd, 'volumes') } } },
        targets: { posix: { plugin: 'posix', options: { directory: join(disk, 'repository'), repository: { init: true } } } },
      }),
    );
    await writeRawImage(join(cwd, 'a.raw'), 12 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
  });
  afterAll(async () => {
    if (disk) execFileSync('umount', [disk]);
    await removeDir(cwd);
  });

  it('fails UNAVAILABLE (exit 6) with the errno and a hint, leaves the record `error`, and succeeds once space is freed', async () => {
    await cairnJson(['backup', 'list'], { cwd }); // the repository exists before the disk fills
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${filler()}`, 'bs=64k', 'count=200'], { stdio: 'pipe' }); // ~3 MiB left
    } catch {
      // full already: fine too
    }
    const r = await cairn(['backup', 'create', 'a', '--json'], { cwd });
    expect(r.code, r.stderr).toBe(6);
    const error = jsonError(r) as ReturnType<typeof jsonError> & { hint?: string };
    expect(error).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
    expect(error.message).toMatch(/no space left on the file system/);
    expect(error.hint).toMatch(/full: free space on it.*cairn repo gc/);

    const text = await cairn(['backup', 'create', 'a'], { cwd });
    expect(text.code, text.stderr).toBe(6);
    expect(text.stderr).toMatch(/^error \[UNAVAILABLE\]: .*no space left on the file system.*\nhint: the file system written to is full/m);

    const records = await cairnJson(['backup', 'list'], { cwd });
    expect(records.map((b: { status: string }) => b.status)).toEqual(['error', 'error']);
    expect((await readdir(join(disk!, 'repository', 'locks')).catch(() => [])).filter((n) => !n.includes('~'))).toEqual([]);

    await rm(filler());
    const ok = await cairnJson(['backup', 'create', 'a'], { cwd });
    expect(ok.status).toBe('available');
    const verify = await cairn(['backup', 'verify', ok.id, '--json'], { cwd });
    expect(verify.code, verify.stderr).toBe(0);
  }, 60_000);
});
