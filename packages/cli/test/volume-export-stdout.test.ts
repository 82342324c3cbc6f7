import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, readBytes, removeDir, tempDir, writeRawImage } from './helpers.js';

/**
 * `-` as the file of `volume export` is refused (an image appears whole or not at all, which
 * stdout cannot do), as `backup export --archive -` is, never a file named "-"; `./-` is one.
 */
describe('"-" as the file of volume export', () => {
  let cwd: string;
  let image: Buffer;

  beforeAll(async () => {
    cwd = await tempDir();
    image = await writeRawImage(join(cwd, 'v.raw'), 1 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd });
  }, 120_000);
  afterAll(() => removeDir(cwd));

  it.each([[[] as string[]], [['--format', 'qcow2']], [['--force']]])('volume export v - %j is INVALID_INPUT (exit 2), prints nothing on stdout and writes no file "-"', async (extra) => {
    const before = await readdir(cwd);
    const r = await cairn(['volume', 'export', 'v', '-', ...extra, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('stdout') });
    expect(r.stdout).toBe('');
    expect(await readdir(cwd)).toEqual(before);
  });

  it('volume export v ./- writes a file named "-" holding the volume', async () => {
    const r = await cairn(['volume', 'export', 'v', './-', '--json'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ file: join(cwd, '-'), format: 'raw' });
    expect((await readBytes(join(cwd, '-'))).equals(image)).toBe(true);
  });
});
