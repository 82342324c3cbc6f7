import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/**
 * Writes that fail (full disk, missing directory) surface as CairnErrors with their mapped code
 * and exit code, and leave nothing behind: no `.partial`, no temporary, no half-written file.
 * A 1 MiB tmpfs stands in for a full disk (needs root; the test is skipped otherwise).
 */
const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('writing to a full disk or a missing directory', () => {
  let cwd: string;
  let full: string;
  let backupId: string;
  const run = (args: string[]) => cairn(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
    full = join(cwd, 'full');
    await mkdir(full);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', full]);
    await writeRawImage(join(cwd, 'a.raw'), 4 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'a'], { cwd })).id;
  });
  afterAll(async () => {
    if (full) execFileSync('umount', [full]);
    await removeDir(cwd);
  });

  it('backup export onto a full disk fails with UNAVAILABLE (exit 6) and removes its temporary file', async () => {
    const r = await run(['backup', 'export', backupId, '--archive', join(full, 'x.tar'), '--json']);
    expect(r.code, r.stderr).toBe(6);
    expect(jsonError(r).code).toBe('UNAVAILABLE');
    expect(r.stderr).not.toMatch(/Unhandled|already finalized/);
    expect(await readdir(full)).toEqual([]);
  });

  it('backup export into a missing directory fails with NOT_FOUND (exit 3), not INTERNAL', async () => {
    const r = await run(['backup', 'export', backupId, '--archive', join(cwd, 'nodir', 'x.tar'), '--json']);
    expect(r.code, r.stderr).toBe(3);
    expect(jsonError(r).code).toBe('NOT_FOUND');
  });

  it('volume export onto a full disk fails with UNAVAILABLE and leaves no half-written image', async () => {
    const r = await run(['volume', 'export', 'a', join(full, 'a.raw'), '--json']);
    expect(r.code, r.stderr).toBe(6);
    expect(jsonError(r).code).toBe('UNAVAILABLE');
    expect(await readdir(full)).toEqual([]);
  });

  it('volume export --force onto a full disk keeps the old file intact', async () => {
    const old = Buffer.alloc(64 * 1024, 'old image ');
    await writeFile(join(full, 'a.raw'), old);
    try {
      const r = await run(['volume', 'export', 'a', join(full, 'a.raw'), '--force', '--json']);
      expect(r.code, r.stderr).toBe(6);
      expect(await readdir(full)).toEqual(['a.raw']);
      expect((await readFile(join(full, 'a.raw'))).equals(old)).toBe(true);
    } finally {
      await rm(join(full, 'a.raw'), { force: true });
    }
  });

  it('init whose config cannot be written (full disk) is UNAVAILABLE naming the config and the repository it made, and leaves no claim or temporary file', async () => {
    const filler = join(full, 'filler');
    execFileSync('sh', ['-c', `dd if=/dev/zero of='${filler}' bs=4k 2>/dev/null || true`]);
    try {
      const repository = join(cwd, 'init-repo');
      const r = await cairn(['init', '--yes', '--repository-dir', repository, '--volumes-dir', join(cwd, 'init-volumes'), '--json'], { cwd: full });
      expect(r.code, r.stderr).toBe(6);
      const error = jsonError(r);
      expect(error).toMatchObject({ code: 'UNAVAILABLE', details: { file: join(full, 'cairn.config.json'), repository } });
      expect(error.message).toContain(repository);
      expect(await readdir(full)).toEqual(['filler']);
      expect(await readdir(repository)).toContain('config'); // the repository stays, as the message says
    } finally {
      await rm(filler, { force: true });
    }
  });
});
