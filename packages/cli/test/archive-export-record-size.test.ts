import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage } from './helpers.js';

/**
 * `backup export --archive` sizes its staging volume and the archive's manifest from the stored
 * backup (its repository manifest), not from the catalog's record: records written before
 * 2026-12-05 kept the volume's size at request time, which may differ. Either way the archive
 * holds the backup as stored, and imports and restores byte for byte.
 */
describe('backup export --archive of a record whose catalog size is wrong', () => {
  let cwd: string;
  let config: string;
  let image: Buffer;
  let backupId: string;
  const size = 4 * MiB;

  beforeAll(async () => {
    cwd = await tempDir();
    config = await writeDeploymentConfig(cwd);
    image = await writeRawImage(join(cwd, 'v.raw'), size);
    await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'v'], { cwd })).id;
  }, 120_000);
  afterAll(() => removeDir(cwd));

  /** Sets the catalog record's size (as an older version may have recorded it). */
  async function recordSize(recorded: number): Promise<void> {
    const ctx = await CliContext.create({ config }, new Output({ quiet: true }));
    try {
      const catalog = await ctx.catalog();
      await catalog.putBackup({ ...(await catalog.getBackup(backupId)), size: recorded });
    } finally {
      await ctx.close();
    }
  }

  it.each([
    ['smaller', size / 2],
    ['larger', size * 2],
  ])('a recorded size %s than the stored one: the archive has the stored size and imports and restores byte for byte', async (_, recorded) => {
    await recordSize(recorded);
    expect(await cairnJson(['backup', 'show', backupId], { cwd })).toMatchObject({ size: recorded });
    const archive = join(cwd, `${recorded}.tar`);
    const r = await cairn(['backup', 'export', backupId, '--archive', archive, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ backupId, size });
    const other = await tempDir();
    try {
      expect(await cairnJson(['backup', 'import', archive], { cwd: other })).toMatchObject({ id: backupId, size, status: 'available' });
      const restored = await cairnJson(['backup', 'restore', backupId, '--new', '--name', 'back'], { cwd: other });
      const out = join(other, 'back.raw');
      const e = await cairn(['volume', 'export', restored.volume.id, out], { cwd: other });
      expect(e.code, e.stderr).toBe(0);
      expect((await readFile(out)).equals(image)).toBe(true);
    } finally {
      await removeDir(other);
    }
  }, 120_000);
});
