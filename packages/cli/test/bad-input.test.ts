import { chmod, lstat, mkdir, readdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnUnprivileged, jsonError, MiB, removeDir, tempDir, type CliResult } from './helpers.js';

/**
 * Bad input to every command ends in its documented code and exit code, before anything is
 * written: never INTERNAL (exit 1), never a file or directory left behind.
 */
describe('cairn with bad input', () => {
  let cwd: string;
  let volumeId: string;
  let backupId: string;
  beforeAll(async () => {
    cwd = await tempDir();
    volumeId = (await cairnJson(['volume', 'create', 'disk', '--size', '1MiB'], { cwd })).id;
    backupId = (await cairnJson(['backup', 'create', volumeId, '-q'], { cwd })).id;
  });
  afterAll(() => removeDir(cwd));

  /** A fresh, empty directory under `cwd`. */
  async function emptyDir(name: string): Promise<string> {
    const dir = join(cwd, name);
    await mkdir(dir);
    return dir;
  }

  it('backup export-record -o writes through a symbolic link: the link stays', async () => {
    await mkdir(join(cwd, 'records'));
    await writeFile(join(cwd, 'records', 'rec.json'), 'old');
    await symlink('records/rec.json', join(cwd, 'rec-link.json'));
    const r = await cairn(['backup', 'export-record', backupId, '-o', 'rec-link.json', '--json'], { cwd });
    expect(r.code).toBe(0);
    expect((await lstat(join(cwd, 'rec-link.json'))).isSymbolicLink()).toBe(true);
    expect(JSON.parse(await readFile(join(cwd, 'records', 'rec.json'), 'utf8'))).toHaveProperty('record');
  });

  it('backup list --volume with a name two volumes share is CONFLICT (exit 4), not an empty list', async () => {
    await cairnJson(['volume', 'create', 'twin', '--size', '1MiB'], { cwd });
    const twin = (await cairnJson(['volume', 'create', 'twin', '--size', '1MiB'], { cwd })).id;
    await cairnJson(['backup', 'create', twin, '-q'], { cwd });
    const r = await cairn(['backup', 'list', '--volume', 'twin', '--json'], { cwd });
    expect(r.code).toBe(4);
    expect(jsonError(r).code).toBe('CONFLICT');
    expect(await cairnJson(['backup', 'list', '--volume', 'no-such-volume'], { cwd })).toEqual([]);
  });

  it('volume export to a directory is INVALID_INPUT (exit 2), with or without --force, and writes nothing', async () => {
    const dir = await emptyDir('export-dir');
    for (const force of [[], ['--force']]) {
      const r = await cairn(['volume', 'export', volumeId, dir, ...force, '--json'], { cwd });
      expect(r.code).toBe(2);
      expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { file: dir } });
      expect(jsonError(r).message).toContain('is a directory');
    }
    expect(await readdir(dir)).toEqual([]);
    expect((await readdir(cwd)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('volume export under a file (not a directory) is INVALID_INPUT (exit 2) naming that file', async () => {
    await writeFile(join(cwd, 'plain'), 'x');
    const r = await cairn(['volume', 'export', volumeId, join(cwd, 'plain', 'out.raw'), '--json'], { cwd });
    expect(r.code).toBe(2);
    expect(jsonError(r).message).toBe(`${join(cwd, 'plain')} is not a directory`);
  });

  it('backup export --archive to a directory is INVALID_INPUT (exit 2) before any export work', async () => {
    const dir = await emptyDir('archive-dir');
    const r = await cairn(['backup', 'export', backupId, '-a', dir, '--force', '--json'], { cwd });
    expect(r.code).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { file: dir } });
    expect(r.stderr).not.toContain('export:'); // no progress: nothing was exported
    expect((await readdir(cwd)).filter((n) => /\.tmp$|\.partial$/.test(n))).toEqual([]);
  });

  it('backup import of a directory is INVALID_INPUT (exit 2), not CORRUPT', async () => {
    const dir = await emptyDir('import-dir');
    const r = await cairn(['backup', 'import', dir, '--json'], { cwd });
    expect(r.code).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', message: `archive ${dir} is a directory` });
  });

  it('a config path that is a directory is INVALID_INPUT (exit 2), named or found in the working directory', async () => {
    const dir = await emptyDir('config-dir');
    const named = await cairn(['--config', dir, 'volume', 'list', '--json'], { cwd });
    expect(named.code).toBe(2);
    expect(jsonError(named)).toMatchObject({ code: 'INVALID_INPUT', details: { file: dir } });
    await mkdir(join(dir, 'cairn.config.json'));
    const found = await cairn(['volume', 'list'], { cwd: dir });
    expect(found.code).toBe(2);
    expect(found.stderr).toContain(`config file ${join(dir, 'cairn.config.json')} is a directory`);
    // A path through a regular file: no such config can exist there, and retrying will not help.
    await writeFile(join(cwd, 'plain-file'), '');
    const through = await cairn(['--config', join(cwd, 'plain-file', 'cairn.config.json'), 'volume', 'list', '--json'], { cwd });
    expect(through.code).toBe(2);
    expect(jsonError(through).code).toBe('INVALID_INPUT');
  });

  it('a stateDir that is a file, or under one, is UNAVAILABLE (exit 6) saying so and naming the jobs directory, for every command that uses it; backup create records nothing', async () => {
    // Before: `EEXIST: file already exists`, or for cancel a guess that the job was another user's.
    const dir = await emptyDir('state-is-a-file');
    await writeFile(join(dir, 'state'), 'not a directory');
    const config = (stateDir: string) => ({
      stateDir,
      volumeDrivers: { file: { plugin: 'file', options: { directory: 'vols' } } },
      targets: { posix: { plugin: 'posix', options: { directory: 'repo', repository: { init: true } } } },
    });
    for (const stateDir of ['state', 'state/below']) {
      const file = join(dir, `${stateDir.replace('/', '-')}.json`);
      await writeFile(file, JSON.stringify(config(stateDir)));
      const jobs = join(dir, stateDir, 'jobs');
      const v = await cairnJson(['volume', 'create', `d-${stateDir.replace('/', '-')}`, '--size', '1MiB', '--config', file], { cwd: dir });
      for (const args of [['backup', 'jobs'], ['backup', 'cancel', 'some-job'], ['backup', 'create', v.id, '-q']]) {
        const r = await cairn([...args, '--config', file, '--json'], { cwd: dir });
        expect(r.code, `${stateDir} ${args.join(' ')}: ${r.stderr}`).toBe(6);
        const err = jsonError(r);
        expect(err, args.join(' ')).toMatchObject({ code: 'UNAVAILABLE', details: { file: jobs } });
        expect(err.message).toContain('a file is there or on the way to it');
        expect(err.message).toContain('stateDir');
      }
      // The backup was refused before it started: no record (before: one left `error` per try).
      expect(await cairnJson(['backup', 'list', '--config', file], { cwd: dir })).toEqual([]);
    }
    // A restore to a new volume is refused before it starts too: no volume is made.
    const good = join(dir, 'good.json');
    await writeFile(good, JSON.stringify(config('good-state')));
    const volumes = await cairnJson(['volume', 'list', '--config', good], { cwd: dir });
    const b = await cairnJson(['backup', 'create', volumes[0].id, '-q', '--config', good], { cwd: dir });
    const restore = await cairn(['backup', 'restore', b.id, '--new', '--config', join(dir, 'state.json'), '--json'], { cwd: dir });
    expect(restore.code, restore.stderr).toBe(6);
    expect(jsonError(restore)).toMatchObject({ code: 'UNAVAILABLE', details: { file: join(dir, 'state', 'jobs') } });
    expect(await cairnJson(['volume', 'list', '--config', good], { cwd: dir })).toEqual(volumes);
    expect((await cairnJson(['backup', 'show', b.id, '--config', good], { cwd: dir })).status).toBe('available');
    expect(await readFile(join(dir, 'state'), 'utf8')).toBe('not a directory');
  });

  it('a config that never ends (/dev/zero) or holds more than 4 MiB is INVALID_INPUT (exit 2) naming it, read no further', async () => {
    const endless = await cairn(['--config', '/dev/zero', 'volume', 'list', '--json'], { cwd });
    expect(endless.code).toBe(2);
    expect(jsonError(endless)).toMatchObject({ code: 'INVALID_INPUT', details: { file: '/dev/zero' } });
    const big = join(cwd, 'big.config.json');
    await writeFile(big, `{"version": 1, "pad": "${'x'.repeat(4 * 1024 * 1024)}"}`);
    const tooBig = await cairn(['--config', big, 'volume', 'list', '--json'], { cwd });
    expect(tooBig.code).toBe(2);
    expect(jsonError(tooBig)).toMatchObject({ code: 'INVALID_INPUT', details: { file: big } });
  });
});

describe('cairn init with bad input creates nothing', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  /** Runs init in a new empty directory and returns the result and what the directory then holds. */
  async function initIn(name: string, args: string[], env?: Record<string, string | undefined>): Promise<{ r: CliResult; left: string[] }> {
    const dir = await mkdir(join(cwd, name), { recursive: true }).then(() => join(cwd, name));
    const r = await cairn(['init', '--yes', ...args, '--json'], { cwd: dir, env });
    return { r, left: await readdir(dir) };
  }

  it('a config in a directory that does not exist is NOT_FOUND (exit 3); the directory is not created', async () => {
    const { r, left } = await initIn('missing-parent', ['--config', 'no/such/dir/cairn.config.json']);
    expect(r.code).toBe(3);
    expect(jsonError(r)).toMatchObject({ code: 'NOT_FOUND' });
    expect(left).toEqual([]);
  });

  it('a config path that is a directory is INVALID_INPUT (exit 2), also with --force; no repository is made', async () => {
    await mkdir(join(cwd, 'dir-config', 'sub'), { recursive: true });
    const { r, left } = await initIn('dir-config', ['--config', 'sub', '--force']);
    expect(r.code).toBe(2);
    expect(jsonError(r).message).toContain('is a directory');
    expect(left).toEqual(['sub']);
  });

  it('an unknown --compression or a bad --chunk-size is a usage error (exit 2) before the repository directory is made', async () => {
    for (const [i, args] of [['--compression', 'zip'], ['--chunk-size', '100'], ['--chunk-size', '1G'], ['--chunk-size', '96KiB']].entries()) {
      const { r, left } = await initIn(`options-${i}`, args);
      expect(r.code).toBe(2);
      expect(jsonError(r).code).toBe('INVALID_INPUT');
      expect(left).toEqual([]);
    }
  });

  it('a passphrase that cannot be resolved is refused before the repository directory is made', async () => {
    const unset = await initIn('pass-env', ['--passphrase-env', 'CAIRN_TEST_UNSET_PASSPHRASE'], { CAIRN_TEST_UNSET_PASSPHRASE: undefined });
    expect(unset.r.code).toBe(3);
    expect(unset.left).toEqual([]);
    const missing = await initIn('pass-file', ['--passphrase-file', join(cwd, 'no-such-key')]);
    expect(missing.r.code).toBe(3);
    expect(missing.left).toEqual([]);
    await writeFile(join(cwd, 'empty-key'), '');
    const empty = await initIn('pass-empty', ['--passphrase-file', join(cwd, 'empty-key')]);
    expect(empty.r.code).toBe(2);
    expect(empty.left).toEqual([]);
    // A binary key file would be a weaker passphrase than it holds (each invalid byte reads as U+FFFD).
    await writeFile(join(cwd, 'binary-key'), Buffer.from([0x6b, 0xff, 0xfe, 0x80, 0x0a]));
    const binary = await initIn('pass-binary', ['--passphrase-file', join(cwd, 'binary-key')]);
    expect(binary.r.code).toBe(2);
    expect(jsonError(binary.r).message).toContain('not UTF-8');
    expect(binary.left).toEqual([]);
  });

  it('an empty --volumes-dir is INVALID_INPUT (exit 2); no config that could not load is written', async () => {
    const { r, left } = await initIn('empty-volumes', ['--volumes-dir', '']);
    expect(r.code).toBe(2);
    expect(left).toEqual([]);
  });

  it('init --force over a config that is a symbolic link writes through it: the link stays', async () => {
    const dir = join(cwd, 'linked');
    await mkdir(dir);
    await writeFile(join(cwd, 'real.json'), '{}');
    await symlink('../real.json', join(dir, 'cairn.config.json'));
    const r = await cairn(['init', '--yes', '--force', '--json'], { cwd: dir });
    expect(r.code).toBe(0);
    expect((await lstat(join(dir, 'cairn.config.json'))).isSymbolicLink()).toBe(true);
    expect(JSON.parse(await readFile(join(cwd, 'real.json'), 'utf8'))).toMatchObject({ version: 1 });
  });
});

describe('cairn with files it may not read or write', () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = await tempDir();
  });
  afterAll(() => removeDir(cwd));

  it('an image or archive that cannot be read is UNAVAILABLE (exit 6) naming it, not INTERNAL', async () => {
    for (const [command, name] of [['volume', 'locked.raw'], ['backup', 'locked.tar']] as const) {
      const file = join(cwd, name);
      await writeFile(file, Buffer.alloc(MiB, 1), { mode: 0o600 });
      await chmod(file, 0o000);
      const r = await cairnUnprivileged([command, 'import', file, '--json'], cwd);
      expect(r.code).toBe(6);
      expect(jsonError(r)).toMatchObject({ code: 'UNAVAILABLE', details: { file } });
      expect(jsonError(r).message).toContain('permission denied');
    }
  });

  /** Exports a new volume (`volume`) into `<cwd>/<name>/out.raw`, that directory made with `mode`. */
  async function exportIntoDirectory(name: string, mode: number, volume: string): Promise<{ r: CliResult; dir: string; file: string }> {
    const dir = join(cwd, name);
    await mkdir(dir);
    await chmod(dir, mode);
    const v = await cairnUnprivileged(['volume', 'create', volume, '--size', '1MiB', '--json'], cwd);
    expect(v.code).toBe(0);
    const file = join(dir, 'out.raw');
    return { r: await cairnUnprivileged(['volume', 'export', JSON.parse(v.stdout).id, file, '--json'], cwd), dir, file };
  }

  it('volume export into a directory it may not write in is UNAVAILABLE (exit 6) before anything is read', async () => {
    const { r, dir, file } = await exportIntoDirectory('locked', 0o555, 'd');
    expect(r.code).toBe(6);
    expect(jsonError(r)).toMatchObject({ code: 'UNAVAILABLE', details: { file } });
    expect(await readdir(dir)).toEqual([]);
  });

  it('a directory it may write in but not read (a drop box) is UNAVAILABLE before anything is written', async () => {
    const { r, dir, file } = await exportIntoDirectory('drop-box', 0o333, 'd2');
    expect(r.code).toBe(6);
    expect(jsonError(r)).toMatchObject({ code: 'UNAVAILABLE', details: { file } });
    await chmod(dir, 0o755);
    expect(await readdir(dir)).toEqual([]);
  });

  it('a passphrase file it may not read is UNAVAILABLE (exit 6) naming it, in init and in a config; a missing one stays NOT_FOUND (exit 3)', async () => {
    const key = join(cwd, 'locked-key');
    await writeFile(key, 'a passphrase in a file\n', { mode: 0o600 });
    const repo = join(cwd, 'secret-repo');
    await mkdir(repo);
    expect((await cairnUnprivileged(['init', '--yes', '--passphrase-file', key, '--json'], repo)).code).toBe(0);
    await chmod(key, 0o000);
    const fresh = join(cwd, 'secret-init');
    await mkdir(fresh);
    const init = await cairnUnprivileged(['init', '--yes', '--passphrase-file', key, '--json'], fresh);
    expect(init.code, init.stderr).toBe(6);
    expect(jsonError(init)).toMatchObject({ code: 'UNAVAILABLE', details: { file: key } });
    expect(await readdir(fresh)).toEqual([]);
    const stats = await cairnUnprivileged(['repo', 'stats', '--json'], repo);
    expect(stats.code, stats.stderr).toBe(6);
    expect(jsonError(stats)).toMatchObject({ code: 'UNAVAILABLE', details: { file: key } });
    await rename(key, `${key}.moved`);
    const missing = await cairnUnprivileged(['repo', 'stats', '--json'], repo);
    expect(missing.code, missing.stderr).toBe(3);
    expect(jsonError(missing).code).toBe('NOT_FOUND');
  });

  it('a volume created in a volumes directory it may not write in is UNAVAILABLE (exit 6), not INTERNAL', async () => {
    const home = join(cwd, 'home');
    const volumes = join(home, '.cairn', 'volumes');
    await mkdir(join(home, '.cairn', 'repository'), { recursive: true });
    await mkdir(volumes, { mode: 0o555 });
    await chmod(volumes, 0o555);
    const r = await cairnUnprivileged(['volume', 'create', 'd', '--size', '1MiB', '--json'], home);
    expect(r.code).toBe(6);
    expect(jsonError(r).code).toBe('UNAVAILABLE');
    expect(jsonError(r).message).toContain('EACCES');
    expect(await readdir(volumes)).toEqual([]);
  });
});
