import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, jsonError, removeDir, tempDir } from './helpers.js';

/**
 * docs/cli.md, "Global options": `--config ""` (a script's `--config "$CONFIG"` with the variable
 * unset) names no file. It is `INVALID_INPUT` (exit 2, `details.option: "config"`), never a fall
 * back to the config in the working directory or the embedded defaults there: those would back
 * up to, or restore from, a repository the operator did not name. Nothing is created.
 */
describe('cairn --config with an empty path', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  it('is INVALID_INPUT for a command, which neither uses the embedded defaults nor makes ./.cairn', async () => {
    for (const args of [['--config', '', 'volume', 'create', 'v', '--size', '1MiB'], ['--config=', 'volume', 'list'], ['-c', '', 'backup', 'list']]) {
      const r = await cairn([...args, '--json'], { cwd });
      expect(r.code, r.stderr).toBe(2);
      expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { option: 'config' } });
    }
    expect(await readdir(cwd)).toEqual([]);
  });

  it('is INVALID_INPUT for a command even beside a config in the working directory, which stays unused', async () => {
    const dir = join(cwd, 'with-config');
    await import('node:fs/promises').then((fs) => fs.mkdir(dir));
    await writeFile(join(dir, 'cairn.config.json'), JSON.stringify({ volumeDrivers: { d: { plugin: 'file', options: { directory: 'vols' } } }, targets: { t: { plugin: 'posix', options: { directory: 'repo', repository: { init: true } } } } }));
    const r = await cairn(['--config', '', 'volume', 'list', '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r).code).toBe('INVALID_INPUT');
    expect((await readdir(dir)).sort()).toEqual(['cairn.config.json']);
  });

  it('init --config "" is INVALID_INPUT naming the option, and writes nothing', async () => {
    const dir = join(cwd, 'init');
    await import('node:fs/promises').then((fs) => fs.mkdir(dir));
    const r = await cairn(['init', '--yes', '--config', '', '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { option: 'config' } });
    expect(await readdir(dir)).toEqual([]);
  });
});
