import { readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BackupService } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STAGING_OWNER_FILE } from '../src/archive/staging.js';
import { writeArchive } from '../src/archive/writer.js';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage } from './helpers.js';

/** This process's staging directories (their owner file names this pid). */
async function myStagings(): Promise<string[]> {
  const mine: string[] = [];
  for (const name of (await readdir(tmpdir())).filter((n) => n.startsWith('cairn-archive-'))) {
    const owner = await readFile(join(tmpdir(), name, STAGING_OWNER_FILE), 'utf8').then((t) => JSON.parse(t) as { owner?: { pid?: number } }, () => undefined);
    if (owner?.owner?.pid === process.pid) mine.push(name);
  }
  return mine;
}

/**
 * A backup deleted (`cairn backup delete`, another process) while `backup export` runs: the export
 * either archives the backup as it was when it started reading it, whole, or fails before it has
 * written anything; never NOT_FOUND after doing all the work.
 */
describe('backup export of a backup deleted meanwhile', () => {
  let cwd: string;
  let config: string;

  beforeAll(async () => {
    cwd = await tempDir();
    config = await writeDeploymentConfig(cwd);
    await writeRawImage(join(cwd, 'a.raw'), 12 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
  }, 120_000);
  afterAll(() => removeDir(cwd));

  /** Runs writeArchive on a new backup of `a` through `service` wrapped by `wrap` (the real service underneath). */
  async function exportWith(wrap: (service: BackupService, deleteIt: () => Promise<void>) => BackupService, file: string): Promise<{ id: string; outcome: unknown }> {
    const id = (await cairnJson(['backup', 'create', 'a'], { cwd })).id as string;
    const ctx = await CliContext.create({ config }, new Output({ quiet: true }));
    try {
      const record = await (await ctx.manager()).getBackup(id);
      const service = await ctx.target(record.service);
      const deleteIt = async () => {
        const r = await cairn(['backup', 'delete', id, '--json'], { cwd });
        expect(r.code, r.stderr).toBe(0);
      };
      const outcome = await writeArchive(wrap(service, deleteIt), record, file).then(
        (r) => r,
        (e: { code?: string; message?: string }) => ({ error: `${e.code}: ${e.message}` }),
      );
      return { id, outcome };
    } finally {
      await ctx.close();
    }
  }

  it('deleted right after the data was restored into staging: the archive is written whole and imports byte-exact', async () => {
    const file = join(cwd, 'after-restore.tar');
    const { id, outcome } = await exportWith(
      (service, deleteIt) =>
        Object.assign(Object.create(service) as BackupService, {
          restore: async (...args: Parameters<BackupService['restore']>) => {
            await service.restore(...args);
            await deleteIt(); // between the restore and anything after it
          },
        }),
      file,
    );
    expect(outcome).toMatchObject({ backupId: id, size: 12 * MiB });
    expect((await cairnJson<{ id: string }[]>(['backup', 'list'], { cwd })).map((b) => b.id)).not.toContain(id);
    // The archive is the backup, whole: it imports back under its id and restores the image.
    const imported = await cairn(['backup', 'import', file, '--json'], { cwd });
    expect(imported.code, imported.stderr).toBe(0);
    expect(JSON.parse(imported.stdout).id).toBe(id);
    const restored = await cairnJson(['backup', 'restore', id, '--new', '--name', 'back'], { cwd });
    const out = join(cwd, 'back.raw');
    expect((await cairn(['volume', 'export', restored.volume.id, out], { cwd })).code).toBe(0);
    expect((await readFile(out)).equals(await readFile(join(cwd, 'a.raw')))).toBe(true);
    expect(await myStagings()).toEqual([]);
  }, 120_000);

  it('deleted before the restore reads it: NOT_FOUND, and no archive, temporary file or staging is left', async () => {
    const file = join(cwd, 'before-restore.tar');
    const { outcome } = await exportWith(
      (service, deleteIt) =>
        Object.assign(Object.create(service) as BackupService, {
          restore: async (...args: Parameters<BackupService['restore']>) => {
            await deleteIt();
            await service.restore(...args);
          },
        }),
      file,
    );
    expect(outcome).toMatchObject({ error: expect.stringMatching(/^NOT_FOUND: /) });
    expect((await readdir(cwd)).filter((n) => n.includes('before-restore'))).toEqual([]);
    expect(await myStagings()).toEqual([]);
  }, 120_000);
});
