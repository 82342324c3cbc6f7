import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, removeDir, tempDir } from './helpers.js';

describe('cairn volume names', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));
  const run = (args: string[]) => cairn(args, { cwd });

  it('volume create with a name holding a newline exits 2 (INVALID_INPUT) and creates nothing', async () => {
    const r = await run(['volume', 'create', 'two\nlines', '--size', '1MiB', '--json']);
    expect(r.code).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { field: 'name', reason: 'control_character' } });
    expect(await cairnJson(['volume', 'list'], { cwd })).toEqual([]);
  });

  it('volume create with a name of 256 characters exits 2 (INVALID_INPUT); 255 characters works', async () => {
    const r = await run(['volume', 'create', 'x'.repeat(256), '--size', '1MiB', '--json']);
    expect(r.code).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { field: 'name', reason: 'too_long' } });
    const v = await cairnJson(['volume', 'create', 'y'.repeat(255), '--size', '1MiB'], { cwd });
    expect(v.name).toBe('y'.repeat(255));
  });

  it('backup create --name of 256 characters exits 2 (INVALID_INPUT)', async () => {
    await cairnJson(['volume', 'create', 'src', '--size', '1MiB'], { cwd });
    const r = await run(['backup', 'create', 'src', '--name', 'b'.repeat(256), '--json']);
    expect(r.code).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { field: 'name', reason: 'too_long' } });
  });
});
