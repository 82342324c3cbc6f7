import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { currentOwner, type ProcessOwner } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, removeDir, tempDir } from './helpers.js';
import { deadOwner, forgeStagingDir } from './helpers-staging.js';

/**
 * `backup export-record -o <file>` writes the record in a private `.cairn-partial-XXXXXX`
 * directory beside the file and renames it into place (createPartialFile), as volume and archive
 * exports do: one a killed writer left beside it is removed first once its owner is certainly
 * dead, never a live writer's, and nothing of its own is left beside the file.
 */
describe('backup export-record -o: partial files beside the output', () => {
  let cwd: string;
  let backupId: string;
  beforeAll(async () => {
    cwd = await tempDir();
    const v = await cairnJson(['volume', 'create', 'disk', '--size', '1MiB'], { cwd });
    backupId = (await cairnJson(['backup', 'create', v.id, '-q'], { cwd })).id;
  }, 60_000);
  afterAll(() => removeDir(cwd));

  /** `<dir>/<name>` as a writer's partial directory naming `owner`, holding a half-written `file`. */
  async function partialOf(dir: string, name: string, owner: ProcessOwner, file: string): Promise<void> {
    await forgeStagingDir(join(dir, name), owner);
    await writeFile(join(dir, name, file), '{"half":');
  }

  it("writes the record whole, removing a killed writer's partial directory and keeping a live one's", async () => {
    const out = join(cwd, 'records');
    await mkdir(out);
    await partialOf(out, '.cairn-partial-DEAD01', await deadOwner(), 'rec.json');
    await partialOf(out, '.cairn-partial-LIVE01', currentOwner(), 'rec.json'); // this test process: alive
    const r = await cairnJson(['backup', 'export-record', backupId, '-o', join(out, 'rec.json')], { cwd });
    expect(r).toEqual({ exported: backupId, file: join(out, 'rec.json') });
    expect((await readdir(out)).sort()).toEqual(['.cairn-partial-LIVE01', 'rec.json']);
    expect(JSON.parse(await readFile(join(out, 'rec.json'), 'utf8'))).toMatchObject({ service: 'posix', record: expect.any(String) });
  }, 60_000);
});
