import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

// `repo gc --repack-threshold`: a pack holding chunks of a deleted backup and of a kept one is
// partly live; the default (0.25) repacks it, `never` only deletes wholly dead packs.
describe('cairn repo gc --repack-threshold', () => {
  let cwd: string;
  const json = (args: string[]) => cairnJson(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
    // 4 MiB: random, text, zeros, random. The second image keeps the text and draws new random
    // megabytes, so the first backup's pack keeps its text chunks live and loses the rest.
    await writeRawImage(join(cwd, 'a.raw'), 4 * MiB);
    await json(['volume', 'import', join(cwd, 'a.raw'), '--name', 'v']);
    const first = await json(['backup', 'create', 'v']);
    await writeRawImage(join(cwd, 'b.raw'), 4 * MiB);
    await json(['volume', 'import', join(cwd, 'b.raw'), '--into', 'v']);
    await json(['backup', 'create', 'v']);
    await json(['backup', 'delete', first.id]);
  }, 120_000);
  afterAll(() => removeDir(cwd));

  it('never: repacks nothing (dry run and real), where the default repacks the partly live pack; the kept backup verifies', async () => {
    const byDefault = await json(['repo', 'gc', '--grace', '0', '--dry-run']);
    expect(byDefault.packsRepacked).toBeGreaterThan(0);
    expect((await json(['repo', 'gc', '--grace', '0', '--dry-run', '--repack-threshold', '1'])).packsRepacked).toBe(0);
    const never = await json(['repo', 'gc', '--grace', '0', '--repack-threshold', 'never']);
    expect(never).toMatchObject({ backups: 1, packsRepacked: 0 });
    expect((await json(['repo', 'verify'])).problems).toEqual([]);
    // Still there to repack, by the default threshold.
    expect((await json(['repo', 'gc', '--grace', '0'])).packsRepacked).toBeGreaterThan(0);
    expect((await json(['repo', 'verify'])).problems).toEqual([]);
  });

  it.each(['1.5', '-0.1', 'abc', '25%', '0x1', ''])('refuses %j as a usage error (exit 2) naming the option', async (value) => {
    const r = await cairn(['repo', 'gc', '--repack-threshold', value, '--json'], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--repack-threshold');
  });
});
