import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, jsonError, removeDir, tempDir } from './helpers.js';

/** A `--repository-dir` that names no place for a directory is the user's input at fault, not a collision of keys. */
describe('cairn init --repository-dir', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  it('init --repository-dir through a file, or naming a file, is INVALID_INPUT (exit 2) naming the option and leaves no config', async () => {
    for (const [name, repositoryDir] of [
      ['through', 'afile/repo'],
      ['deeper', 'afile/repo/deeper'],
      ['at', 'afile'],
    ] as const) {
      const dir = join(cwd, name);
      await mkdir(dir);
      await writeFile(join(dir, 'afile'), 'not a directory');
      const r = await cairn(['init', '--yes', '--repository-dir', repositoryDir, '--json'], { cwd: dir });
      expect(r.code, r.stderr).toBe(2);
      expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { option: 'directory' } });
      expect(jsonError(r).message).toContain(join(dir, repositoryDir));
      expect((await readdir(dir)).sort()).toEqual(['afile']);
      expect(await readFile(join(dir, 'afile'), 'utf8')).toBe('not a directory');
    }
  });
});
