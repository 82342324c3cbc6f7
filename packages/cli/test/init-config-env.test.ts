import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, removeDir, tempDir } from './helpers.js';

/**
 * docs/cli.md, "Global options" and "cairn init": the config is `--config`, else `$CAIRN_CONFIG`,
 * else `./cairn.config.json`. An empty CAIRN_CONFIG (exported but blank, as `CAIRN_CONFIG= cmd`)
 * is unset for every command: init must write the config the others then find.
 */
describe('cairn init and an empty CAIRN_CONFIG', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  it('init with CAIRN_CONFIG="" writes ./cairn.config.json, which the next command loads', async () => {
    const r = await cairnJson(['init', '--yes', '--json'], { cwd, env: { CAIRN_CONFIG: '' } });
    expect(r.config).toBe(join(cwd, 'cairn.config.json'));
    expect(await readdir(cwd)).toContain('cairn.config.json');
    expect(await cairnJson(['volume', 'list', '--json'], { cwd, env: { CAIRN_CONFIG: '' } })).toEqual([]);
  });
});
