import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

describe('backup export --archive: concurrent exports to one file', () => {
  let cwd: string;
  let ids: string[];

  beforeAll(async () => {
    cwd = await tempDir();
    ids = [];
    for (const name of ['x', 'y']) {
      await writeRawImage(join(cwd, `${name}.raw`), 24 * MiB);
      await cairnJson(['volume', 'import', join(cwd, `${name}.raw`), '--name', name], { cwd });
      ids.push((await cairnJson(['backup', 'create', name], { cwd })).id);
    }
  }, 120_000);
  afterAll(async () => {
    await removeDir(cwd);
  });

  // Each export writes a temporary file of its own: two at once never write into one file, so
  // neither corrupts the archive the other published, and the last rename wins whole.
  it('two exports of different backups to one path both succeed, and the file left is one whole archive', async () => {
    const out = join(cwd, 'out');
    await mkdir(out);
    const archive = join(out, 'a.tar');
    const [a, b] = await Promise.all(ids.map((id) => cairn(['backup', 'export', id, '--archive', archive, '--force', '--json'], { cwd })));
    expect([a!.code, b!.code], `${a!.stderr}\n${b!.stderr}`).toEqual([0, 0]);
    expect(await readdir(out)).toEqual(['a.tar']);
    const other = await tempDir();
    try {
      const imported = await cairn(['backup', 'import', archive, '--json'], { cwd: other });
      expect(imported.code, imported.stderr).toBe(0);
      expect(ids).toContain(JSON.parse(imported.stdout).id);
    } finally {
      await removeDir(other);
    }
  }, 120_000);
});
