import { execFile } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOwnedTempDir } from '../src/io/owned-temp-dir.js';
import { cairn, jsonError, removeDir, tempDir } from './helpers.js';

/** The built owned-temp-dir module, run in a child process that exits without removing its directory. */
const OWNED_TEMP_DIR = join(dirname(fileURLToPath(import.meta.url)), '../dist/io/owned-temp-dir.js');

/** A `.cairn-partial-XXXXXX` directory in `dir` whose owner (a process that has exited) is dead, as a killed init leaves one. */
async function deadInitsPartialDir(dir: string): Promise<string> {
  const script = `import { createOwnedTempDir } from ${JSON.stringify(OWNED_TEMP_DIR)};
    process.stdout.write(await createOwnedTempDir('.cairn-partial-', ${JSON.stringify(dir)}));`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
  await writeFile(join(stdout, 'cairn.config.json'), ''); // the config it was writing
  return basename(stdout);
}

/**
 * A plain `cairn init` that stops with ALREADY_EXISTS, because a config (or the empty claim of an
 * init killed while it published) is there, removes the `.cairn-partial-` directories of dead
 * inits beside the config, as an init that goes on does; a live owner's directory stays.
 */
describe('cairn init refused with ALREADY_EXISTS', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  for (const [what, content] of [
    ['a config', '{"version":1}\n'],
    ["a killed init's empty claim", ''],
  ] as const) {
    it(`over ${what}, removes a dead init's partial directory beside it and keeps a live one's`, async () => {
      const dir = join(cwd, content ? 'config' : 'empty');
      await mkdir(dir);
      const file = join(dir, 'cairn.config.json');
      await writeFile(file, content);
      // The live one first: making it sweeps dead ones (createOwnedTempDir), which is not what is tested.
      const live = await createOwnedTempDir('.cairn-partial-', dir); // this process's: alive
      const dead = await deadInitsPartialDir(dir);
      expect((await readdir(dir)).sort()).toEqual([basename(live), dead, 'cairn.config.json'].sort());
      try {
        const r = await cairn(['init', '--yes', '--json'], { cwd: dir });
        expect(r.code, r.stderr).not.toBe(0);
        expect(jsonError(r)).toMatchObject({ code: 'ALREADY_EXISTS', details: { file } });
        expect((await readdir(dir)).sort()).toEqual([basename(live), 'cairn.config.json'].sort());
        expect(await readdir(dir)).not.toContain(dead);
      } finally {
        await rm(live, { recursive: true, force: true });
      }
    });
  }
});
