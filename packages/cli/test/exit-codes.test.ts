import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/** The exit code follows the printed code, also for system errors that are not CairnErrors. */
describe('exit codes of mapped system errors', () => {
  let cwd: string;
  let backupId: string;

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'a.raw'), MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'a'], { cwd })).id;
  });
  afterAll(() => removeDir(cwd));

  it('an ENOENT printed as NOT_FOUND exits 3', async () => {
    const r = await cairn(['backup', 'export-record', backupId, '-o', join(cwd, 'nodir', 'r.json'), '--json'], { cwd });
    expect(jsonError(r).code).toBe('NOT_FOUND');
    expect(r.code).toBe(3);
  });
});
