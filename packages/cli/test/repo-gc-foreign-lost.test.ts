import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

// `repo gc` and what it finds under packs/ that is not as the index says: a file that is no pack
// is left alone and counted; a pack the store lost is reported (a warning and the counts, exit 5
// while backups name chunks no pack holds).
describe('cairn repo gc: foreign files and lost packs under packs/', () => {
  let cwd: string;
  let packs: string;
  const json = (args: string[]) => cairnJson(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
    packs = join(cwd, '.cairn/repository/packs');
    await writeRawImage(join(cwd, 'v.raw'), 3 * MiB);
    await json(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v']);
    await json(['backup', 'create', 'v']);
  }, 120_000);
  afterAll(() => removeDir(cwd));

  it('leaves a file that is no pack alone and counts it, in JSON and text', async () => {
    await writeFile(join(packs, 'my-notes.txt'), 'important');
    await mkdir(join(packs, 'keep'));
    await writeFile(join(packs, 'keep', 'README'), 'important');
    expect(await json(['repo', 'gc', '--grace', '0'])).toMatchObject({ packsDeleted: 0, packKeysUnknown: 2, packsLost: 0, chunksLost: 0 });
    const text = await cairn(['repo', 'gc', '--grace', '0'], { cwd });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/pack keys not written by Cairn \(left alone\):\s+2\n/);
    expect(text.stdout).toMatch(/packs deleted:\s+0\n/);
    expect(text.stderr).not.toMatch(/warning/);
    await stat(join(packs, 'my-notes.txt'));
    await stat(join(packs, 'keep', 'README'));
    expect((await json(['repo', 'verify'])).problems).toEqual([]);
  });

  it('warns of a pack lost behind its back and exits 5 while backups name chunks it alone held', async () => {
    const shard = (await readdir(packs)).find((d) => /^[0-9a-f]{2}$/.test(d))!;
    const [pack] = await readdir(join(packs, shard));
    await rm(join(packs, shard, pack!));
    const first = await cairn(['repo', 'gc', '--grace', '0', '--json'], { cwd });
    expect(first.code, first.stderr).toBe(5);
    const report = JSON.parse(first.stdout);
    expect(report).toMatchObject({ packsLost: 1, packsDeleted: 0 });
    expect(report.chunksLost).toBeGreaterThan(0);
    expect(first.stderr).toMatch(/^warning: 1 pack\(s\) named by the index are missing from the store.*chunk\(s\) that backups name have no copy left/m);
    // The pack has left the index; the chunks backups name are still missing, and still said.
    const text = await cairn(['repo', 'gc', '--grace', '0'], { cwd });
    expect(text.code, text.stderr).toBe(5);
    expect(text.stdout).toMatch(/packs lost from the store:\s+0\n/);
    expect(text.stdout).toMatch(new RegExp(`chunks lost \\(backups name them; run repo verify\\):\\s+${report.chunksLost}\\n`));
    expect(text.stderr).toMatch(/^warning: no pack was found lost in this run; \d+ chunk\(s\) that backups name have no copy left/m);
  });
});
