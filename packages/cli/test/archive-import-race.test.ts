import { CairnError, isCairnError, type BackupJob, type BackupRecord, type BackupService, type BackupSource, type Catalog } from '@cairn/core';
import { describe, expect, it, vi } from 'vitest';
import { importArchive } from '../src/archive/importer.js';
import { readArchive } from '../src/archive/reader.js';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairn, cairnJson, cairnSpawn, jsonError, MiB, useArchivedBackup } from './helpers.js';

// Counts the archive reads, to tell when an import was refused.
vi.mock('../src/archive/reader.js', async (original) => {
  const actual = await original<typeof import('../src/archive/reader.js')>();
  return { ...actual, readArchive: vi.fn(actual.readArchive) };
});

/**
 * Two imports of one archive (one backup id) at once: exactly one imports it, the other is refused
 * with ALREADY_EXISTS having written nothing, and the record ends `available`.
 */
describe('concurrent imports of one archive', () => {
  const fx = useArchivedBackup(16 * MiB);

  /** Removes the backup so the archive can be imported again. */
  const deleteBackup = () => cairnJson(['backup', 'delete', fx.backupId], { cwd: fx.cwd });

  /** The record as stored, and whether `backup verify` finds it whole. */
  async function stored(): Promise<{ status: string; verified: number }> {
    const record = await cairnJson<BackupRecord>(['backup', 'show', fx.backupId], { cwd: fx.cwd });
    return { status: record.status, verified: (await cairn(['backup', 'verify', fx.backupId], { cwd: fx.cwd })).code };
  }

  it('two calls at once, both finding the id free before either writes: one imports, the other gets ALREADY_EXISTS', async () => {
    await deleteBackup();
    const ctx = await CliContext.create({ config: fx.config }, new Output({ quiet: true }));
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
      const to = { service: await ctx.target(), catalog: racing };
      const results = await Promise.allSettled([importArchive(to, fx.archive), importArchive(to, fx.archive)]);
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
    const runs = await Promise.all([0, 1].map(() => cairnSpawn(['backup', 'import', fx.archive, '--json'], { cwd: fx.cwd }).exit));
    expect(runs.map((r) => r.code).sort()).toEqual([0, 4]);
    expect(jsonError(runs.find((r) => r.code === 4)!).code).toBe('ALREADY_EXISTS');
    expect(await stored()).toEqual({ status: 'available', verified: 0 });
  });

  it("an import of an id that another import has claimed is refused with ALREADY_EXISTS before it reads the archive; this process's recovery leaves the running import alone", async () => {
    await deleteBackup();
    const ctx = await CliContext.create({ config: fx.config }, new Output({ quiet: true }));
    try {
      const target = await ctx.target();
      const catalog = await ctx.catalog();
      // The first import waits once it has read the archive, before it writes the data.
      let reached!: () => void;
      let proceed!: () => void;
      const writing = new Promise<void>((r) => (reached = r));
      const go = new Promise<void>((r) => (proceed = r));
      const held = Object.assign(Object.create(target) as BackupService, {
        backup: async (job: BackupJob, source: BackupSource) => (reached(), await go, target.backup(job, source)),
      });
      const first = importArchive({ service: held, catalog }, fx.archive);
      await writing;
      const reads = vi.mocked(readArchive).mock.calls.length;
      await expect(importArchive({ service: target, catalog }, fx.archive)).rejects.toMatchObject({ code: 'ALREADY_EXISTS', details: { status: 'creating' } });
      expect(vi.mocked(readArchive).mock.calls.length).toBe(reads);
      expect((await (await ctx.manager()).recover()).skipped).toEqual([fx.backupId]);
      expect((await catalog.getBackup(fx.backupId)).status).toBe('creating');
      proceed();
      expect(await first).toMatchObject({ id: fx.backupId, status: 'available' });
    } finally {
      await ctx.close();
    }
    expect(await stored()).toEqual({ status: 'available', verified: 0 });
  });

  it("an import whose final catalog writes failed leaves its record creating, and this process's recovery fails it to error", async () => {
    await deleteBackup();
    const ctx = await CliContext.create({ config: fx.config }, new Output({ quiet: true }));
    try {
      const catalog = await ctx.catalog();
      const failing = Object.assign(Object.create(catalog) as Catalog, {
        putBackup: async (record: BackupRecord, options?: { ifAbsent?: boolean }) => {
          if (record.status !== 'creating') throw new CairnError('UNAVAILABLE', 'catalog went away', { driver: 'catalog' });
          return catalog.putBackup(record, options);
        },
      });
      await expect(importArchive({ service: await ctx.target(), catalog: failing }, fx.archive)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect((await catalog.getBackup(fx.backupId)).status).toBe('creating');
      const report = await (await ctx.manager()).recover();
      expect(report.failedBackups).toEqual([fx.backupId]);
      expect((await catalog.getBackup(fx.backupId)).status).toBe('error');
    } finally {
      await ctx.close();
    }
  });
});
