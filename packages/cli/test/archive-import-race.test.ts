import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isCairnError, type BackupRecord, type Catalog } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importArchive } from '../src/archive/importer.js';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/**
 * Two imports of one archive (one backup id) at once: exactly one imports it, the other is refused
 * with ALREADY_EXISTS having written nothing, and the record ends `available`.
 */
describe('concurrent imports of one archive', () => {
  let cwd: string;
  let config: string;
  let archive: string;
  let backupId: string;

  beforeAll(async () => {
    cwd = await tempDir();
    config = join(cwd, 'cairn.config.json');
    await writeFile(
      config,
      JSON.stringify({
        volumeDrivers: { file: { plugin: 'file', options: { directory: '.cairn/volumes' } } },
        targets: { posix: { plugin: 'posix', options: { directory: '.cairn/repository', repository: { init: true } } } },
      }),
    );
    await writeRawImage(join(cwd, 'a.raw'), 16 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'a'], { cwd })).id;
    archive = join(cwd, 'a.tar');
    await cairnJson(['backup', 'export', backupId, '--archive', archive], { cwd });
  });
  afterAll(() => removeDir(cwd));

  /** Removes the backup so the archive can be imported again. */
  const deleteBackup = () => cairnJson(['backup', 'delete', backupId], { cwd });

  /** The record as stored, and whether `backup verify` finds it whole. */
  async function stored(): Promise<{ status: string; verified: number }> {
    const record = await cairnJson<BackupRecord>(['backup', 'show', backupId], { cwd });
    return { status: record.status, verified: (await cairn(['backup', 'verify', backupId], { cwd })).code };
  }

  it('two calls at once, both finding the id free before either writes: one imports, the other gets ALREADY_EXISTS', async () => {
    await deleteBackup();
    const ctx = await CliContext.create({ config }, new Output({ quiet: true }));
    try {
      const catalog = await ctx.catalog();
      // Each call's first look at the record waits (up to 2 s) until the other call looks too:
      // without an atomic claim both see the id free, both write the record and the data.
      let arrived = 0;
      let meet!: () => void;
      const met = new Promise<void>((r) => (meet = r));
      const racing = Object.assign(Object.create(catalog) as Catalog, {
        getBackup: async (id: string) => {
          if (++arrived === 2) meet();
          await Promise.race([met, new Promise((r) => setTimeout(r, 2000))]);
          return catalog.getBackup(id);
        },
      });
      const to = { service: await ctx.target(), catalog: racing, locks: await ctx.catalogLocks() };
      const results = await Promise.allSettled([importArchive(to, archive), importArchive(to, archive)]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost.map((r) => (isCairnError(r.reason) ? r.reason.code : String(r.reason)))).toEqual(['ALREADY_EXISTS']);
    } finally {
      await ctx.close();
    }
    expect(await stored()).toEqual({ status: 'available', verified: 0 });
  });

  it('two `cairn backup import` processes at once: one exits 0, the other ALREADY_EXISTS (exit 4)', async () => {
    await deleteBackup();
    const runs = await Promise.all([0, 1].map(() => cairnSpawn(['backup', 'import', archive, '--json'], { cwd }).exit));
    expect(runs.map((r) => r.code).sort()).toEqual([0, 4]);
    expect(jsonError(runs.find((r) => r.code === 4)!).code).toBe('ALREADY_EXISTS');
    expect(await stored()).toEqual({ status: 'available', verified: 0 });
  });
});
