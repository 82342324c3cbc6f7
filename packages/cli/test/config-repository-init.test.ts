import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, removeDir, tempDir } from './helpers.js';

/**
 * docs/cli.md, "Config": a target's `repository.init` is `true` or `{chunkSize, compression,
 * packSize}`. A repository keeps its layout for ever, so a misspelt key (`chunksize`) or another
 * key (a literal `passphrase`) is refused rather than ignored, and a wrong value is refused by the
 * config's check (naming the file and the path in it) before the repository's directory is made.
 */
describe('a config whose repository.init is wrong', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  async function config(name: string, init: unknown): Promise<string> {
    const file = join(cwd, `${name}.json`);
    const targets = { t: { plugin: 'posix', options: { directory: `repo-${name}`, repository: { init } } } };
    await writeFile(file, JSON.stringify({ volumeDrivers: { d: { plugin: 'file', options: { directory: 'vols' } } }, targets }));
    return file;
  }

  const cases: [string, unknown, string][] = [
    ['misspelt', { chunksize: 65536, compresion: 'none' }, 'targets.t.options.repository.init'],
    ['literal-passphrase', { passphrase: 'hunter2' }, 'targets.t.options.repository.init'],
    ['chunk-size', { chunkSize: 1000 }, 'targets.t.options.repository.init.chunkSize'],
    ['chunk-size-string', { chunkSize: '64KiB' }, 'targets.t.options.repository.init.chunkSize'],
    ['compression', { compression: 'bogus' }, 'targets.t.options.repository.init.compression'],
    ['pack-size', { packSize: -1 }, 'targets.t.options.repository.init.packSize'],
  ];

  for (const [name, init, path] of cases) {
    it(`${name}: INVALID_INPUT naming the file and ${path}, no repository directory made`, async () => {
      const file = await config(name, init);
      const r = await cairn(['--config', file, 'volume', 'list', '--json'], { cwd });
      expect(r.code, r.stderr).toBe(2);
      const e = jsonError(r);
      expect(e.code).toBe('INVALID_INPUT');
      expect(e.details.file).toBe(file);
      expect(e.details.issues).toEqual([expect.objectContaining({ path })]);
      expect(await readdir(cwd)).not.toContain(`repo-${name}`);
    });
  }

  it('the documented keys make the repository they describe', async () => {
    const file = await config('good', { chunkSize: 65536, compression: 'none', packSize: 1048576 });
    await cairnJson(['--config', file, 'volume', 'list'], { cwd });
    const stored = JSON.parse(await readFile(join(cwd, 'repo-good', 'config'), 'utf8'));
    expect(stored).toMatchObject({ chunkSize: 65536, compression: 'none', packSize: 1048576 });
  });
});
