import { type BackupRecord } from '@cairn/core';
import { describe, expect, it, vi } from 'vitest';
import { importArchive } from '../src/archive/importer.js';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { MiB, useArchivedBackup } from './helpers.js';

let failDispose = false;
vi.mock('../src/archive/reader.js', async (original) => {
  const actual = await original<typeof import('../src/archive/reader.js')>();
  return {
    ...actual,
    readArchive: async (...args: Parameters<typeof actual.readArchive>) => {
      const out = await actual.readArchive(...args);
      const dispose = out.staging.dispose.bind(out.staging);
      out.staging.dispose = async () => {
        await dispose();
        if (failDispose) throw Object.assign(new Error('EBUSY: resource busy or locked, rmdir'), { code: 'EBUSY' });
      };
      return out;
    },
  };
});

describe('an import whose staging cleanup fails after the record is available', () => {
  const fx = useArchivedBackup(4 * MiB, { deleted: true });

  it('keeps the record available with its service data and rejects with the cleanup error', async () => {
    const ctx = await CliContext.create({ config: fx.config }, new Output({ quiet: true }));
    try {
      const catalog = await ctx.catalog();
      const writes: string[] = [];
      const spy = Object.assign(Object.create(catalog), {
        putBackup: async (r: BackupRecord, o?: { ifAbsent?: boolean }) => (writes.push(r.status), catalog.putBackup(r, o)),
      });
      failDispose = true;
      const result = await importArchive({ service: await ctx.target(), catalog: spy }, fx.archive).then((r) => r.status, (e) => `${e.code}: ${e.message}`);
      failDispose = false;
      const rec = await catalog.getBackup(fx.backupId);
      expect(result).toMatch(/^BUSY: /);
      expect(writes).toEqual(['creating', 'available']);
      expect(rec.status).toBe('available');
      expect(rec.failReason).toBeUndefined();
      expect(Object.keys(rec.serviceData).length).toBeGreaterThan(0);
    } finally {
      await ctx.close();
    }
  });
});
