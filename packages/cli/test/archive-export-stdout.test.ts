import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/**
 * `-` as an output: `backup export --archive -` is refused (an archive appears whole or not at
 * all, which stdout cannot do), never a file named "-"; `backup export-record -o -` prints the
 * record on stdout, as without `-o` (and as `import-record -` reads stdin).
 */
describe('"-" as the output of backup export and export-record', () => {
  let cwd: string;
  let backupId: string;

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 1 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'v'], { cwd })).id;
  }, 120_000);
  afterAll(() => removeDir(cwd));

  it('backup export --archive - is INVALID_INPUT (exit 2), writes no file "-" and leaves the backup available', async () => {
    const r = await cairn(['backup', 'export', backupId, '--archive', '-', '--json'], { cwd });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('stdout') });
    expect(r.stdout).toBe('');
    expect(await readdir(cwd)).not.toContain('-');
    expect(await cairnJson(['backup', 'show', backupId], { cwd })).toMatchObject({ status: 'available' });
  });

  it('backup export --archive ./- writes a file named "-"', async () => {
    const r = await cairn(['backup', 'export', backupId, '--archive', './-', '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ file: join(cwd, '-'), backupId });
    expect(await readdir(cwd)).toContain('-');
  });

  it('backup export-record -o - prints the record on stdout, as without -o, and writes no file', async () => {
    const plain = await cairn(['backup', 'export-record', backupId], { cwd });
    expect(plain.code, plain.stderr).toBe(0);
    const before = await readdir(cwd);
    const dash = await cairn(['backup', 'export-record', backupId, '-o', '-'], { cwd });
    expect(dash.code, dash.stderr).toBe(0);
    expect(JSON.parse(dash.stdout)).toEqual(JSON.parse(plain.stdout));
    expect(JSON.parse(dash.stdout)).toMatchObject({ record: expect.any(String), service: expect.any(String) });
    expect(await readdir(cwd)).toEqual(before);
  });
});
