/**
 * Paths a command is given that it cannot use end in their documented code at once: a repository,
 * volumes, state or demo directory under /proc (directories under /proc/<pid> take no new
 * entries: mkdir says ENOENT although the parent is there, and Node's recursive mkdir retried that
 * for ever, at 100% CPU and deaf to SIGTERM), and a `--token-file` that is missing, a directory,
 * or not readable by this process.
 */
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, cairnUnprivileged, cairnWithin, jsonError, removeDir, tempDir } from './helpers.js';

describe('cairn with paths it cannot use', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  async function newDir(name: string): Promise<string> {
    await mkdir(join(cwd, name));
    return join(cwd, name);
  }

  it('init with a repository directory under /proc/<pid> is UNAVAILABLE (exit 6) at once and leaves nothing', async () => {
    const dir = await newDir('proc-repository');
    for (const repository of ['/proc/self/cairn-repository', '/proc/1/cairn-repository/deeper']) {
      const r = await cairnWithin(20_000, ['init', '--yes', '--repository-dir', repository, '--json'], dir);
      expect(r.killed, `init --repository-dir ${repository} still ran after 20 s`).toBe(false);
      expect(r.code, r.stderr).toBe(6);
      expect(jsonError(r).code).toBe('UNAVAILABLE');
      expect(await readdir(dir)).toEqual([]);
    }
  });

  it('demo --dir under /proc/self is UNAVAILABLE (exit 6) at once', async () => {
    const r = await cairnWithin(20_000, ['demo', '--dir', '/proc/self/cairn-demo', '--json'], cwd);
    expect(r.killed, 'demo still ran after 20 s').toBe(false);
    expect(r.code, r.stderr).toBe(6);
    expect(jsonError(r)).toMatchObject({ code: 'UNAVAILABLE', details: { file: '/proc/self/cairn-demo' } });
  });

  it('backup create with the state directory under /proc/self is UNAVAILABLE (exit 6) at once', async () => {
    const dir = await newDir('proc-state');
    const config = {
      version: 1,
      stateDir: '/proc/self/cairn-state',
      volumeDrivers: { file: { plugin: 'file', options: { directory: 'volumes' } } },
      targets: { posix: { plugin: 'posix', options: { directory: 'repository', repository: { init: true } } } },
    };
    await writeFile(join(dir, 'cairn.config.json'), JSON.stringify(config));
    const volume = await cairnJson(['volume', 'create', 'disk', '--size', '1MiB'], { cwd: dir });
    const r = await cairnWithin(20_000, ['backup', 'create', volume.id, '--json'], dir);
    expect(r.killed, 'backup create still ran after 20 s').toBe(false);
    expect(r.code, r.stderr).toBe(6);
    expect(jsonError(r).code).toBe('UNAVAILABLE');
  });

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
