import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readArchive } from '../src/archive/reader.js';
import { writeArchive } from '../src/archive/writer.js';
import { CliContext } from '../src/context.js';
import { Output } from '../src/output/output.js';
import { cairnJson, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage } from './helpers.js';

// The metadata limit lowered (for writer and reader alike) so that a 40 MiB backup's manifest
// (10 chunks) stands in for that of a volume with ~1.7 TiB of data under the real 64 MiB.

vi.mock('../src/archive/format.js', async (original) => ({ ...(await original<typeof import('../src/archive/format.js')>()), MAX_METADATA_BYTES: 1200 }));

describe('an archive whose manifest exceeds what an import accepts', () => {
  let cwd: string;
  let config: string;
  beforeAll(async () => {
    cwd = await tempDir();
    config = await writeDeploymentConfig(cwd);
    await writeRawImage(join(cwd, 'big.raw'), 40 * MiB);
    await writeRawImage(join(cwd, 'small.raw'), 4 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'big.raw'), '--name', 'big'], { cwd });
    await cairnJson(['volume', 'import', join(cwd, 'small.raw'), '--name', 'small'], { cwd });
  }, 120_000);
  afterAll(() => removeDir(cwd));

  async function exportOf(volume: string, file: string): Promise<unknown> {
    const id = (await cairnJson(['backup', 'create', volume], { cwd })).id as string;
    const ctx = await CliContext.create({ config }, new Output({ quiet: true }));
    try {
      const record = await (await ctx.manager()).getBackup(id);
      return await writeArchive(await ctx.target(record.service), record, file).then(
        (r) => r,
        (e: { code?: string; message?: string }) => ({ error: `${e.code}: ${e.message}` }),
      );
    } finally {
      await ctx.close();
    }
  }

  it('is never written: export is NOT_SUPPORTED and leaves no file, where it used to write an archive that import refuses', async () => {
    const file = join(cwd, 'big.tar');
    const outcome = await exportOf('big', file);
    expect(outcome).toMatchObject({ error: expect.stringMatching(/^NOT_SUPPORTED: .*cairn-archive\.json would exceed the 1200 bytes an import accepts/) });
    expect((await readdir(cwd)).filter((n) => n.includes('big.tar'))).toEqual([]);
  }, 120_000);

  it('a backup whose manifest fits is written and reads back', async () => {
    const file = join(cwd, 'small.tar');
    expect(await exportOf('small', file)).toMatchObject({ chunks: 1 });
    const { staging, manifest } = await readArchive(file);
    await staging.dispose();
    expect(manifest.chunks).toHaveLength(1);
  }, 120_000);
});
