import { type BackupRecord, type CatalogPutOptions } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import { importArchive } from '../src/archive/importer.js';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { MiB, useArchivedBackup } from './helpers.js';

// An import refused before it writes data withdraws its claim (the `creating` record) in the
// record's section, as every removal of a record is made (core BackupClaims): a reset of the
// record in another process, whose read and write run in that section, never writes it back.

describe("an import's withdrawn claim", () => {
  const fx = useArchivedBackup(2 * MiB, { deleted: true });

  it("is removed in the record's section: not while another process holds it, and once it is left", async () => {
    const ctx = await CliContext.create({ config: fx.config }, new Output({ quiet: true }));
    // Another process sharing the repository: its own context, repository and catalog.
    const other = await CliContext.create({ config: fx.config }, new Output({ quiet: true }));
    try {
      const catalog = await ctx.catalog();
      const otherCatalog = await other.catalog();
      let leave!: () => void;
      let entered!: () => void;
      const inSection = new Promise<void>((r) => (entered = r));
      const held = otherCatalog.section(fx.backupId, () => (entered(), new Promise<void>((r) => (leave = r))));
      await inSection;
      // The import is cancelled once its claim is written, so it withdraws the claim.
      const controller = new AbortController();
      let reachedSection!: () => void;
      const removing = new Promise<'section'>((r) => (reachedSection = () => r('section')));
      const spy = Object.assign(Object.create(catalog), {
        putBackup: async (r: BackupRecord, o?: CatalogPutOptions) => {
          await catalog.putBackup(r, o);
          if (r.status === 'creating') controller.abort();
        },
        section: <T>(id: string, fn: () => Promise<T>, signal?: AbortSignal) => (reachedSection(), catalog.section(id, fn, signal)),
      });
      const imported = importArchive({ service: await ctx.target(), catalog: spy }, fx.archive, { signal: controller.signal }).then(
        () => 'imported',
        (e: { code?: string }) => String(e.code),
      );
      expect(await Promise.race([removing, imported])).toBe('section');
      // Still there while the other process's section runs.
      expect(await otherCatalog.getBackup(fx.backupId)).toMatchObject({ status: 'creating' });
      leave();
      await held;
      expect(await imported).toBe('CANCELLED');
      await expect(otherCatalog.getBackup(fx.backupId)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      await other.close();
      await ctx.close();
    }
  });
});
