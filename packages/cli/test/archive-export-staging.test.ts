import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archivedBackup, cairn, cairnJson, jsonError, MiB, removeDir, tempDir } from './helpers.js';

/**
 * `backup export --archive` restores the backup into a staging volume on disk, in
 * `<stateDir>/staging` (made on first use), not in the system temporary directory (often a
 * tmpfs: a large backup would sit in memory); `--staging-dir` names another. As `backup import`.
 */
describe('backup export --archive: where the backup is staged', () => {
  let cwd: string;
  let backupId: string;
  beforeAll(async () => {
    cwd = await tempDir();
    ({ backupId } = await archivedBackup(cwd, 2 * MiB));
  }, 120_000);
  afterAll(() => removeDir(cwd));

  it('by default in <stateDir>/staging, whatever $TMPDIR is (here a directory that does not exist)', async () => {
    await removeDir(join(cwd, '.cairn', 'staging'));
    const file = join(cwd, 'default.tar');
    const r = await cairn(['backup', 'export', backupId, '--archive', file, '--json'], { cwd, env: { TMPDIR: join(cwd, 'no-such-tmp') } });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ file, backupId });
    expect((await stat(join(cwd, '.cairn', 'staging'))).isDirectory()).toBe(true);
    expect(await readdir(join(cwd, '.cairn', 'staging'))).toEqual([]);
    // The archive is whole: it imports elsewhere.
    const other = join(cwd, 'elsewhere');
    await mkdir(other);
    expect(await cairnJson(['backup', 'import', file], { cwd: other })).toMatchObject({ id: backupId, status: 'available' });
  }, 60_000);

  it('--staging-dir names the directory: used and left empty; a missing one is NOT_FOUND naming it, no archive written', async () => {
    await removeDir(join(cwd, '.cairn', 'staging'));
    const dir = join(cwd, 'my-staging');
    await mkdir(dir);
    const absent = join(cwd, 'absent');
    const missing = await cairn(['backup', 'export', backupId, '--archive', join(cwd, 'm.tar'), '--staging-dir', absent, '--json'], { cwd });
    expect(missing.code, missing.stderr).toBe(3);
    expect(jsonError(missing).code).toBe('NOT_FOUND');
    expect(jsonError(missing).message).toContain(`staging directory in ${absent}`);
    expect((await readdir(cwd)).filter((n) => n === 'm.tar' || n.startsWith('.cairn-partial-'))).toEqual([]);
    expect(await cairnJson(['backup', 'show', backupId], { cwd })).toMatchObject({ status: 'available' });
    const r = await cairn(['backup', 'export', backupId, '--archive', join(cwd, 'n.tar'), '--staging-dir', dir, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(await readdir(dir)).toEqual([]);
    expect(await readdir(join(cwd, '.cairn'))).not.toContain('staging');
    expect((await stat(join(cwd, 'n.tar'))).size).toBeGreaterThan(2 * MiB);
  }, 60_000);
});
