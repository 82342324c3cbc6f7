import { createHash } from 'node:crypto';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tar from 'tar-stream';
import { archivedBackup, cairn, cairnJson, jsonError, MiB, removeDir, tempDir } from './helpers.js';

const TiB = 1024 ** 4;

/** Writes an archive of an all-zero backup of `size` bytes: a manifest without data entries, and its sums. */
async function zeroArchive(file: string, id: string, size: number): Promise<void> {
  const manifest = Buffer.from(
    JSON.stringify({
      format: 'cairn-archive/1',
      createdAt: new Date().toISOString(),
      record: { id, name: '', description: '', volumeId: 'zeros', volumeName: 'zeros', size, service: 'posix', incremental: false, volumeMetadata: {}, createdAt: new Date().toISOString() },
      size,
      chunks: [],
      vmConfig: false,
    }),
  );
  const sums = Buffer.from(`${createHash('sha256').update(manifest).digest('hex')}  cairn-archive.json\n`);
  const pack = tar.pack();
  const parts: Buffer[] = [];
  pack.on('data', (d: unknown) => parts.push(d as Buffer));
  const ended = new Promise<void>((r) => pack.on('end', () => r()));
  pack.entry({ name: 'cairn-archive.json' }, manifest);
  pack.entry({ name: 'SHA256SUMS' }, sums);
  pack.finalize();
  await ended;
  await writeFile(file, Buffer.concat(parts));
}

/**
 * `backup import` stages the archive's data on disk, in `<stateDir>/staging` (made on first use),
 * not in the system temporary directory (often a tmpfs: a large archive would sit in memory);
 * `--staging-dir` names another.
 */
describe('backup import: where the archive is staged', () => {
  let cwd: string;
  let archive: string;
  beforeAll(async () => {
    cwd = await tempDir();
    ({ archive } = await archivedBackup(cwd, 2 * MiB));
  }, 120_000);
  afterAll(() => removeDir(cwd));

  it('by default in <stateDir>/staging, whatever $TMPDIR is (here a directory that does not exist)', async () => {
    const other = join(cwd, 'default');
    await mkdir(other);
    const r = await cairn(['backup', 'import', archive, '--json'], { cwd: other, env: { TMPDIR: join(cwd, 'no-such-tmp') } });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ status: 'available' });
    expect((await stat(join(other, '.cairn', 'staging'))).isDirectory()).toBe(true);
    expect(await readdir(join(other, '.cairn', 'staging'))).toEqual([]);
  }, 60_000);

  it('--staging-dir names the directory: used and left empty; a missing one is NOT_FOUND naming it, nothing imported', async () => {
    const other = join(cwd, 'named');
    const dir = join(cwd, 'my-staging');
    await mkdir(other);
    await mkdir(dir);
    const missing = await cairn(['backup', 'import', archive, '--staging-dir', join(cwd, 'absent'), '--json'], { cwd: other });
    expect(missing.code, missing.stderr).toBe(3);
    expect(jsonError(missing).message).toContain(`staging directory in ${join(cwd, 'absent')}`);
    expect(await cairnJson(['backup', 'list'], { cwd: other })).toEqual([]);
    const r = await cairn(['backup', 'import', archive, '--staging-dir', dir, '--json'], { cwd: other });
    expect(r.code, r.stderr).toBe(0);
    expect(await readdir(dir)).toEqual([]);
    expect(await readdir(join(other, '.cairn'))).not.toContain('staging');
  }, 60_000);
});

/**
 * An archive may claim a huge all-zero backup (a sparse volume is legal, and its archive is tiny).
 * The import accepts it when its staging can hold the size, and a restore of it to a new volume
 * the volume driver cannot make fails before anything is written, with the driver's clear code.
 * A tmpfs staging directory (/dev/shm: files up to 8 EiB) stands in for a staging file system
 * larger than the volume driver's (ext4 here: 16 TiB per file).
 */
describe.runIf(process.platform === 'linux')('backup import of a huge all-zero backup', () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = await tempDir();
    await cairnJson(['volume', 'create', 'small', '--size', '1MiB'], { cwd });
  });
  afterAll(() => removeDir(cwd));

  it('64 TiB staged in a tmpfs is imported; its restore to a new file volume on ext4 is refused before writing', async (ctx) => {
    const shm = await stat('/dev/shm').catch(() => undefined);
    if (!shm?.isDirectory()) ctx.skip();
    const staging = join('/dev/shm', `cairn-t3-${process.pid}`);
    await mkdir(staging, { recursive: true });
    try {
      const file = join(cwd, 'huge.tar');
      const id = 'aaaaaaaa-0000-4000-8000-000000000064';
      await zeroArchive(file, id, 64 * TiB);
      const imported = await cairn(['backup', 'import', file, '--staging-dir', staging, '--json'], { cwd });
      expect(imported.code, imported.stderr).toBe(0);
      expect(JSON.parse(imported.stdout)).toMatchObject({ id, size: 64 * TiB, status: 'available' });
      const volumesBefore = await cairnJson(['volume', 'list'], { cwd });
      const r = await cairn(['backup', 'restore', id, '--new', '--json'], { cwd });
      expect(r.code, r.stderr).not.toBe(0);
      expect(jsonError(r).code).toBe('INVALID_INPUT');
      expect(jsonError(r).message).toContain('larger than the file system allows');
      expect(await cairnJson(['volume', 'list'], { cwd })).toEqual(volumesBefore);
      expect(await cairnJson(['backup', 'show', id], { cwd })).toMatchObject({ status: 'available' });
      // The import's staging on a file system that cannot hold it: refused, and nothing imported.
      await zeroArchive(join(cwd, 'huge2.tar'), 'aaaaaaaa-0000-4000-8000-000000000065', 64 * TiB);
      const refused = await cairn(['backup', 'import', join(cwd, 'huge2.tar'), '--json'], { cwd });
      expect(refused.code, refused.stderr).toBe(2);
      expect(jsonError(refused).code).toBe('INVALID_INPUT');
      expect((await cairnJson(['backup', 'list'], { cwd })).map((b: { id: string }) => b.id)).toEqual([id]);
    } finally {
      await removeDir(staging);
    }
  }, 120_000);
});
