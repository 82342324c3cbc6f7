/**
 * `backup import-record` reads its record from a regular file, a pipe (`<(…)`, a FIFO) or stdin,
 * and refuses an input larger than any exported record before memory runs out.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage } from './helpers.js';

let cwd: string;
let record: string;
let backupId: string;

beforeAll(async () => {
  cwd = await tempDir();
  await writeDeploymentConfig(cwd);
  await writeRawImage(join(cwd, 'a.raw'), 2 * MiB);
  await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
  backupId = (await cairnJson(['backup', 'create', 'a'], { cwd })).id as string;
  record = (await cairn(['backup', 'export-record', backupId], { cwd })).stdout;
});

afterAll(async () => {
  await removeDir(cwd);
});

describe('backup import-record input', () => {
  it('reads the record from a FIFO: the record is parsed and reaches the catalog (ALREADY_EXISTS here, where the backup is known)', async () => {
    const fifo = join(cwd, 'record.fifo');
    await promisify(execFile)('mkfifo', [fifo]);
    const writer = writeFile(fifo, record);
    const r = await cairn(['backup', 'import-record', fifo, '--json'], { cwd });
    await writer;
    expect(r.code, r.stderr).toBe(4);
    expect(jsonError(r)).toMatchObject({ code: 'ALREADY_EXISTS' });
  });

  it('refuses an endless input (/dev/zero) with INVALID_INPUT naming the limit, and still refuses a directory', async () => {
    const zero = await cairn(['backup', 'import-record', '/dev/zero', '--json'], { cwd });
    expect(zero.code, zero.stderr).toBe(2);
    expect(jsonError(zero)).toMatchObject({ code: 'INVALID_INPUT', details: { file: '/dev/zero', limit: 16 * MiB } });
    const dir = await cairn(['backup', 'import-record', cwd, '--json'], { cwd });
    expect(dir.code).toBe(2);
    expect(jsonError(dir)).toMatchObject({ code: 'INVALID_INPUT', details: { file: cwd } });
  });

  it('refuses more than the limit on stdin with INVALID_INPUT naming the limit', async () => {
    const r = await cairn(['backup', 'import-record', '-', '--json'], { cwd, input: ' '.repeat(16 * MiB + 1) });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { limit: 16 * MiB } });
  });
});
