import { execFileSync } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir } from './helpers.js';

/**
 * `backup export --archive` onto a disk that fills up while a data entry is being written (two
 * data entries: the first, 4 MiB, does not fit a 3 MiB tmpfs) fails with UNAVAILABLE (exit 6),
 * never an unhandled stream error, and leaves nothing: no partial directory, no staging volume,
 * and the backup `available` again (its claim released). Needs root for the tmpfs.
 */
const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('backup export --archive onto a disk that fills while an entry is in progress', () => {
  let cwd: string;
  let small: string;
  let mounted = false;

  beforeAll(async () => {
    cwd = await tempDir();
    small = join(cwd, 'small');
    await mkdir(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', small]);
    mounted = true;
    // Data in the first chunk (4 MiB) and in the last (a short one): two non-zero data entries.
    const size = 9 * MiB + 4608;
    const image = Buffer.alloc(size);
    image.fill('first chunk ', 0, 4 * MiB);
    image.fill('last chunk ', 8 * MiB, size);
    await writeFile(join(cwd, 'v.raw'), image);
    await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd });
  }, 120_000);
  afterAll(async () => {
    if (mounted) execFileSync('umount', [small]);
    await removeDir(cwd);
  });

  it('is UNAVAILABLE (exit 6), removes its partial archive and staging volume, and leaves the backup available', async () => {
    const backupId = (await cairnJson(['backup', 'create', 'v'], { cwd })).id as string;
    const staging = join(cwd, 'staging');
    await mkdir(staging);
    const r = await cairn(['backup', 'export', backupId, '--archive', join(small, 'x.tar'), '--staging-dir', staging, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(6);
    expect(jsonError(r).code).toBe('UNAVAILABLE');
    expect(r.stderr).not.toMatch(/Unhandled|Emitted 'error'/);
    expect(await readdir(small)).toEqual([]);
    expect(await readdir(staging)).toEqual([]);
    expect(await cairnJson(['backup', 'show', backupId], { cwd })).toMatchObject({ status: 'available' });
  }, 60_000);
});
