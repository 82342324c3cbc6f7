import { chown, lchown, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isCairnError } from '@cairn/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { removeDir, tempDir } from './helpers.js';

const me = process.geteuid!();
/** A user other than this process's and root, who plants the config (as another user of a shared directory would). */
const stranger = me === 0 ? 4242 : undefined;

/** A config sending backups to a repository the planter can read, and restores from it. */
const planted = (dir: string) =>
  JSON.stringify({ volumeDrivers: { file: { plugin: 'file', options: { directory: join(dir, 'volumes') } } }, targets: { posix: { plugin: 'posix', options: { directory: '/tmp/attacker-repo' } } } });

/**
 * A config found in the working directory is used without being named. Run from a directory
 * another user can write in (/tmp, a shared project directory), a command would back up into, or
 * restore from, whatever repository that user's file names. Like git (safe.directory), Cairn
 * refuses a config it found there that belongs to another user; naming it (--config,
 * CAIRN_CONFIG) still uses it.
 */
describe.skipIf(stranger === undefined)('a config file of another user in the working directory', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(() => removeDir(dir));

  it('is refused when found, not named: INVALID_INPUT with details.file', async () => {
    for (const name of ['cairn.config.json', 'cairn.config.yaml']) {
      const file = join(dir, name);
      await writeFile(file, planted(dir));
      await chown(file, stranger!, stranger!);
      const err = await loadConfig(undefined, dir).then(
        (c) => c,
        (e: unknown) => e,
      );
      expect(isCairnError(err) && err.code, `${name}: ${JSON.stringify(err)}`).toBe('INVALID_INPUT');
      expect(isCairnError(err) && err.details?.file).toBe(file);
      await removeDir(file);
    }
  });

  it('is refused when it is a link of another user, even to a file of root\'s', async () => {
    // The link names a root-owned file in a directory root made (a package's config, say); the
    // planter owns only the link.
    const target = join(dir, 'root-owned.json');
    await writeFile(target, planted(dir));
    const file = join(dir, 'cairn.config.json');
    await symlink(target, file);
    await lchown(file, stranger!, stranger!);
    const err = await loadConfig(undefined, dir).then(
      (c) => c,
      (e: unknown) => e,
    );
    expect(isCairnError(err) && err.code, JSON.stringify(err)).toBe('INVALID_INPUT');
    expect(isCairnError(err) && err.details?.file).toBe(file);
  });

  it('is used when named (--config), and a found config of this user or root is used as before', async () => {
    const file = join(dir, 'cairn.config.json');
    await writeFile(file, planted(dir));
    expect((await loadConfig(undefined, dir)).file).toBe(file); // this user's
    await chown(file, stranger!, stranger!);
    expect((await loadConfig(file, dir)).config.targets.posix!.options.directory).toBe('/tmp/attacker-repo');
  });
});

/**
 * Without a config the embedded defaults keep volumes, the repository and state in `./.cairn`. One
 * another user made beforehand in a shared working directory is theirs to read and fill.
 */
describe.skipIf(stranger === undefined)('the embedded defaults and a .cairn directory of another user', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(() => removeDir(dir));

  it('are refused: INVALID_INPUT with details.file naming the directory', async () => {
    const state = join(dir, '.cairn');
    await mkdir(state, { mode: 0o777 });
    await chown(state, stranger!, stranger!);
    const err = await loadConfig(undefined, dir).then(
      (c) => c,
      (e: unknown) => e,
    );
    expect(isCairnError(err) && err.code, JSON.stringify(err)).toBe('INVALID_INPUT');
    expect(isCairnError(err) && err.details?.file).toBe(state);
  });

  it('are used as before with no .cairn yet, or one of this user', async () => {
    expect((await loadConfig(undefined, dir)).stateDir).toBe(join(dir, '.cairn'));
    await mkdir(join(dir, '.cairn'));
    expect((await loadConfig(undefined, dir)).stateDir).toBe(join(dir, '.cairn'));
  });
});

/**
 * Root run through sudo (`sudo cairn …`, SUDO_UID the invoking user) in that user's own project
 * directory: the config and ./.cairn found there are the invoking user's, and are used (as git's
 * safe.directory trusts SUDO_UID's repositories); another user's are still refused.
 */
describe.skipIf(stranger === undefined)('a config or .cairn of the user who ran sudo', () => {
  let dir: string;
  const saved = process.env.SUDO_UID;
  beforeEach(async () => {
    dir = await tempDir();
    process.env.SUDO_UID = String(stranger);
  });
  afterEach(async () => {
    if (saved === undefined) delete process.env.SUDO_UID;
    else process.env.SUDO_UID = saved;
    await removeDir(dir);
  });

  it('is used when found; one of a third user is still refused', async () => {
    const file = join(dir, 'cairn.config.json');
    await writeFile(file, planted(dir));
    await chown(file, stranger!, stranger!);
    expect((await loadConfig(undefined, dir)).file).toBe(file);
    await chown(file, stranger! + 1, stranger! + 1);
    const err = await loadConfig(undefined, dir).then(
      (c) => c,
      (e: unknown) => e,
    );
    expect(isCairnError(err) && err.code, JSON.stringify(err)).toBe('INVALID_INPUT');
  });

  it('uses the embedded defaults in a .cairn of the sudo user', async () => {
    const state = join(dir, '.cairn');
    await mkdir(state);
    await chown(state, stranger!, stranger!);
    expect((await loadConfig(undefined, dir)).stateDir).toBe(state);
  });
});
