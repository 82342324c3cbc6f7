import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, jsonError, removeDir, tempDir } from './helpers.js';

/**
 * A config whose target has `repository.init: true` and a passphrase that cannot be read fails
 * with that error and makes nothing: the passphrase is read before the repository's directory is
 * made, so no empty repository directory is left behind.
 */
describe('repository.init with a passphrase that cannot be read', () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = await tempDir();
    await mkdir(join(cwd, 'a-directory'));
  });
  afterAll(() => removeDir(cwd));

  const cases: [string, string, string][] = [
    ['env-unset', 'env:CAIRN_TEST_NOPE_X', 'NOT_FOUND'],
    ['file-missing', 'file:nofile', 'NOT_FOUND'],
    ['file-directory', 'file:a-directory', 'INVALID_INPUT'],
  ];

  for (const [name, passphrase, code] of cases) {
    it(`${name} (${passphrase}): ${code}, no repository directory made`, async () => {
      const file = join(cwd, `${name}.json`);
      const targets = { t: { plugin: 'posix', options: { directory: `repo-${name}`, repository: { init: true, passphrase } } } };
      await writeFile(file, JSON.stringify({ volumeDrivers: { d: { plugin: 'file', options: { directory: `vols-${name}` } } }, targets }));
      const r = await cairn(['--config', file, 'backup', 'list', '--json'], { cwd, env: { CAIRN_TEST_NOPE_X: undefined } });
      expect(r.code, r.stderr).not.toBe(0);
      expect(jsonError(r).code).toBe(code);
      expect(await readdir(cwd)).not.toContain(`repo-${name}`);
    });
  }
});
