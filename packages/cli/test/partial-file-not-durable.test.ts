import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { claimConfigFile } from '../src/io/config-claim.js';
import { createPartialFile, writeFileWhole } from '../src/io/partial-file.js';
import { run } from '../src/program.js';
import { cairnJson, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage } from './helpers.js';

/**
 * The fsync of a directory cannot be made to fail on a real file system here, so the CLI's
 * `syncDir` (the one from @cairn/core it imports) fails with EIO for the directories in `failing`
 * and is the real one everywhere else. Everything else is real: files, renames, the CLI's commands
 * (run in this process), the posix repository, the file volumes.
 */
const failing = vi.hoisted(() => new Set<string>());
vi.mock('@cairn/core', async (importOriginal) => {
  const real = await importOriginal<typeof import('@cairn/core')>();
  const syncDir = async (dir: string): Promise<void> => {
    if (failing.has(dir)) throw Object.assign(new Error(`EIO: i/o error, fsync '${dir}'`), { code: 'EIO', errno: -5, syscall: 'fsync' });
    return real.syncDir(dir);
  };
  return { ...real, syncDir };
});

/** Runs `cairn args` in this process; its stdout and stderr are captured, not printed. */
async function cairnHere(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (stdout.push(String(chunk)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (stderr.push(String(chunk)), true));
  const exitCode = process.exitCode;
  try {
    process.exitCode = undefined;
    const code = await run(['node', 'cairn', ...args]);
    return { code, stdout: stdout.join(''), stderr: stderr.join('') };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = exitCode;
  }
}

/** A directory (made) whose fsync fails. */
async function unsyncable(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  failing.add(dir);
  return dir;
}

/**
 * A file renamed (or linked) into place whose directory then cannot be fsynced IS published: the
 * publish resolves, saying so (`notDurable`), and every command that publishes a file succeeds
 * with a warning that the file is written but may not survive a crash, instead of failing while
 * the file is there.
 */
describe('a published file whose directory cannot be fsynced', () => {
  let cwd: string;
  let config: string;
  let backupId: string;
  let data: Buffer;
  beforeAll(async () => {
    cwd = await tempDir();
    config = await writeDeploymentConfig(cwd);
    data = await writeRawImage(join(cwd, 'a.raw'), 4 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'a'], { cwd })).id as string;
  }, 120_000);
  afterAll(() => removeDir(cwd));

  it('PartialFile.publish resolves with notDurable (the system error mapped, details.file); the file is in place, nothing else left', async () => {
    const dir = await unsyncable(join(cwd, 'unit'));
    const file = join(dir, 'f.bin');
    const partial = await createPartialFile(file);
    await writeFile(partial.path, 'content');
    const published = await partial.publish();
    expect(published.notDurable?.code).toBe('UNAVAILABLE');
    expect(published.notDurable?.details).toEqual({ file });
    expect(published.notDurable?.message).toMatch(/is written, but its directory .* could not be fsynced \(EIO/);
    expect(await readFile(file, 'utf8')).toBe('content');
    expect(await readdir(dir)).toEqual(['f.bin']);
  });

  it('writeFileWhole resolves with notDurable only where the fsync fails', async () => {
    const dir = await unsyncable(join(cwd, 'whole'));
    expect((await writeFileWhole(join(dir, 'w'), 'data')).notDurable?.code).toBe('UNAVAILABLE');
    expect(await readFile(join(dir, 'w'), 'utf8')).toBe('data');
    expect(await readdir(dir)).toEqual(['w']);
    expect(await writeFileWhole(join(cwd, 'w2'), 'data')).toEqual({});
  });

  it("a config claim's publish resolves with notDurable, the config in place and kept by release()", async () => {
    const dir = await unsyncable(join(cwd, 'claim'));
    const file = join(dir, 'cairn.config.json');
    const claim = await claimConfigFile(file);
    const published = await claim.publish('{"version":1}\n');
    await claim.release();
    expect(published && published.notDurable?.code).toBe('UNAVAILABLE');
    expect(await readFile(file, 'utf8')).toBe('{"version":1}\n');
    expect(await readdir(dir)).toEqual(['cairn.config.json']);
  });

  it('cairn init (plain and --force) succeeds, warning that the config may not be durable', async () => {
    const dir = await unsyncable(join(cwd, 'init'));
    const file = join(dir, 'cairn.config.json');
    const plain = await cairnHere(['init', '--yes', '--config', file, '--json']);
    expect(plain.code, plain.stderr).toBe(0);
    expect(JSON.parse(plain.stdout)).toMatchObject({ config: file, repositoryCreated: true });
    expect(plain.stderr).toContain(`warning: ${file} is written, but its directory ${dir} could not be fsynced`);
    const forced = await cairnHere(['init', '--yes', '--force', '--config', file, '--json']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(JSON.parse(forced.stdout)).toMatchObject({ config: file, repositoryCreated: false });
    expect(forced.stderr).toContain(`warning: ${file} is written, but its directory ${dir} could not be fsynced`);
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ version: 1, defaultTarget: 'posix' });
  }, 60_000);

  it('cairn volume export succeeds with the image in place and a warning', async () => {
    const dir = await unsyncable(join(cwd, 'volume'));
    const file = join(dir, 'a.raw');
    const r = await cairnHere(['volume', 'export', 'a', file, '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ file, format: 'raw' });
    expect(r.stderr).toContain(`warning: ${file} is written, but its directory ${dir} could not be fsynced`);
    expect((await readFile(file)).equals(data)).toBe(true);
    expect(await readdir(dir)).toEqual(['a.raw']);
  }, 60_000);

  it('cairn backup export --archive succeeds with the archive in place and a warning (not in the JSON result)', async () => {
    const dir = await unsyncable(join(cwd, 'archive'));
    const file = join(dir, 'a.tar');
    const r = await cairnHere(['backup', 'export', backupId, '--archive', file, '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result).toMatchObject({ file, backupId });
    expect(result).not.toHaveProperty('notDurable');
    expect(r.stderr).toContain(`warning: ${file} is written, but its directory ${dir} could not be fsynced`);
    expect(await readdir(dir)).toEqual(['a.tar']);
    // The archive is whole: another deployment imports it.
    const other = await tempDir();
    try {
      await writeDeploymentConfig(other);
      expect(await cairnJson(['backup', 'import', file], { cwd: other })).toMatchObject({ id: backupId, size: 4 * MiB });
    } finally {
      await removeDir(other);
    }
  }, 60_000);

  it('cairn backup export-record -o succeeds with the record in place and a warning', async () => {
    const dir = await unsyncable(join(cwd, 'record'));
    const file = join(dir, 'rec.json');
    const r = await cairnHere(['backup', 'export-record', backupId, '-o', file, '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ exported: backupId, file });
    expect(r.stderr).toContain(`warning: ${file} is written, but its directory ${dir} could not be fsynced`);
    expect(JSON.parse(await readFile(file, 'utf8'))).toHaveProperty('record');
    expect(await readdir(dir)).toEqual(['rec.json']);
  }, 60_000);
});
