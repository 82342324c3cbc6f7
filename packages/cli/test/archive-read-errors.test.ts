import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isCairnError, MemoryBackupService, MemoryCatalog } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importArchive } from '../src/archive/importer.js';
import { readArchive } from '../src/archive/reader.js';
import { cairn, cairnJson, jsonError, removeDir, tempDir } from './helpers.js';

/**
 * An archive that cannot be read (a system error: here EIO, which every read of /proc/self/mem at
 * offset 0 gives, a regular file) is the code its errno maps to, UNAVAILABLE, never CORRUPT or
 * "not a Cairn archive" (a verdict on content never read), nor an unmapped error; nothing written.
 */
const EIO_FILE = '/proc/self/mem';

describe('an archive whose reads fail with EIO', () => {
  let cwd: string;
  let staging: string;
  beforeAll(async () => {
    cwd = await tempDir();
    staging = join(cwd, 'staging');
    await mkdir(staging);
  });
  afterAll(() => removeDir(cwd));

  it('readArchive rejects with UNAVAILABLE naming the file and the errno, and leaves no staging volume', async () => {
    const err = await readArchive(EIO_FILE, { stagingDir: staging }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isCairnError(err), String(err)).toBe(true);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(EIO_FILE) });
    expect((err as Error).message).toContain('EIO');
    expect(await readdir(staging)).toEqual([]);
  });

  it('importArchive rejects with UNAVAILABLE and records nothing', async () => {
    const catalog = new MemoryCatalog();
    const err = await importArchive({ service: new MemoryBackupService(), catalog }, EIO_FILE, { stagingDir: staging }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isCairnError(err), String(err)).toBe(true);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('EIO') });
    expect(await catalog.listBackups()).toEqual([]);
    expect(await readdir(staging)).toEqual([]);
  });

  it('cairn backup import of it is UNAVAILABLE (exit 6) and registers nothing', async () => {
    const r = await cairn(['backup', 'import', EIO_FILE, '--staging-dir', staging, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(6);
    expect(jsonError(r)).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('EIO') });
    expect(await cairnJson(['backup', 'list'], { cwd })).toEqual([]);
    expect(await readdir(staging)).toEqual([]);
  });
});
