import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { currentOwner, processStartTime, type ProcessOwner } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, removeDir, tempDir } from './helpers.js';

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

  /** The owner of a process started and then SIGKILLed: certainly dead. */
  async function killedOwner(): Promise<ProcessOwner> {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    await new Promise((r) => child.once('spawn', r));
    const owner = { ...currentOwner(), pid: child.pid!, startTime: processStartTime(child.pid!) };
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    return owner;
  }

  /** `<dir>/<name>` as a writer's partial directory naming `owner`, holding a half-written `file`. */
  async function partialOf(dir: string, name: string, owner: ProcessOwner, file: string): Promise<void> {
    await mkdir(join(dir, name));
    await writeFile(join(dir, name, 'cairn-staging.json'), JSON.stringify({ format: 'cairn-staging/1', owner, createdAt: new Date().toISOString() }));
    await writeFile(join(dir, name, file), '{"half":');
  }

  it("writes the record whole, removing a killed writer's partial directory and keeping a live one's", async () => {
    const out = join(cwd, 'records');
    await mkdir(out);
    await partialOf(out, '.cairn-partial-DEAD01', await killedOwner(), 'rec.json');
    await partialOf(out, '.cairn-partial-LIVE01', currentOwner(), 'rec.json'); // this test process: alive
    const r = await cairnJson(['backup', 'export-record', backupId, '-o', join(out, 'rec.json')], { cwd });
    expect(r).toEqual({ exported: backupId, file: join(out, 'rec.json') });
    expect((await readdir(out)).sort()).toEqual(['.cairn-partial-LIVE01', 'rec.json']);
    expect(JSON.parse(await readFile(join(out, 'rec.json'), 'utf8'))).toMatchObject({ service: 'posix', record: expect.any(String) });
  }, 60_000);
});
