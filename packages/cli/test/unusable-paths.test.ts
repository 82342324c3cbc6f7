/**
 * Paths a command is given that it cannot use end in their documented code at once: a volumes
 * directory under /proc (where Node's recursive mkdir spun for ever), and a `--token-file` that
 * is missing, a directory, or not readable by this process.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnUnprivileged, cairnWithin, jsonError, removeDir, tempDir } from './helpers.js';

describe('cairn with paths it cannot use', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  async function newDir(name: string): Promise<string> {
    await mkdir(join(cwd, name));
    return join(cwd, name);
  }

  it('volume create with a volumes directory under /proc/self is UNAVAILABLE (exit 6) at once, naming the directory', async () => {
    const dir = await newDir('proc-volumes');
    for (const directory of ['/proc/self/cairn-volumes', '/proc/self/cairn-volumes/deeper']) {
      const config = {
        version: 1,
        volumeDrivers: { file: { plugin: 'file', options: { directory } } },
        targets: { posix: { plugin: 'posix', options: { directory: 'repository', repository: { init: true } } } },
      };
      await writeFile(join(dir, 'cairn.config.json'), JSON.stringify(config));
      const r = await cairnWithin(20_000, ['volume', 'create', 'disk', '--size', '1MiB', '--json'], dir);
      expect(r.killed, `volume create in ${directory} still ran after 20 s`).toBe(false);
      expect(r.code, r.stderr).toBe(6);
      expect(jsonError(r)).toMatchObject({ code: 'UNAVAILABLE', details: { file: '/proc/self/cairn-volumes' } });
    }
  });

  it('serve --token-file it may not read is UNAVAILABLE (exit 6) naming it; missing is NOT_FOUND (exit 3), a directory INVALID_INPUT (exit 2)', async () => {
    const dir = await newDir('token');
    const token = join(dir, 'api-token');
    await writeFile(token, 'a-token-long-enough-to-be-accepted\n', { mode: 0o600 });
    await chmod(token, 0o000);
    const locked = await cairnUnprivileged(['serve', '--listen', '127.0.0.1:0', '--token-file', token, '--json'], dir);
    expect(locked.code, locked.stderr).toBe(6);
    expect(jsonError(locked)).toMatchObject({ code: 'UNAVAILABLE', details: { file: token } });
    expect(jsonError(locked).message).toContain('permission denied');

    const missing = await cairnUnprivileged(['serve', '--listen', '127.0.0.1:0', '--token-file', join(dir, 'absent'), '--json'], dir);
    expect(missing.code, missing.stderr).toBe(3);
    expect(jsonError(missing)).toMatchObject({ code: 'NOT_FOUND', details: { file: join(dir, 'absent') } });

    const directory = await cairnUnprivileged(['serve', '--listen', '127.0.0.1:0', '--token-file', dir, '--json'], dir);
    expect(directory.code, directory.stderr).toBe(2);
    expect(jsonError(directory)).toMatchObject({ code: 'INVALID_INPUT', details: { file: dir } });
  });
});
