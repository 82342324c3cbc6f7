import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/** A job that cannot be recorded (so `backup cancel` could not reach it) is cancelled, not left running. */
describe('a job whose job file cannot be written', () => {
  let cwd: string;

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'a.raw'), 64 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    await writeFile(join(cwd, '.cairn', 'jobs'), 'not a directory'); // the jobs directory cannot be created
  });
  afterAll(() => removeDir(cwd));

  it('backup create fails with UNAVAILABLE (exit 6) and no available backup is left', async () => {
    const r = await cairn(['backup', 'create', 'a', '--json'], { cwd });
    const list = await cairnJson<any[]>(['backup', 'list'], { cwd });
    expect(list.filter((b) => b.status === 'available')).toEqual([]);
    expect(r.code, r.stderr).toBe(6);
    expect(jsonError(r).code).toBe('UNAVAILABLE');
  });
});
