import { lstat, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { CairnError } from '@cairn/core';
import type { z } from 'zod';
import { readBounded } from '../io/input-file.js';
import { firstDuplicateKey } from './json-duplicate-key.js';
import { jsonErrorPosition } from './json-position.js';
import { ConfigSchema, type CairnConfig } from './schema.js';

/** The most a config file may hold: a config is a few KiB, and `--config /dev/zero` must not fill memory. */
const CONFIG_LIMIT = 4 * 1024 * 1024;
import { parseYamlDocument } from './yaml-document.js';

/** File names looked up in the working directory, in this order. */
export const CONFIG_NAMES = ['cairn.config.json', 'cairn.config.yaml', 'cairn.config.yml'] as const;

export interface LoadedConfig {
  /** Absolute path of the file, or `undefined` for the embedded defaults. */
  file: string | undefined;
  /** The validated config with every relative path made absolute. */
  config: CairnConfig;
  /** Absolute state directory (jobs live in `<stateDir>/jobs`). */
  stateDir: string;
}

/**
 * The embedded defaults, relative to `baseDir`: file volumes in `.cairn/volumes`, a posix
 * repository in `.cairn/repository` (created on first use, not encrypted).
 */
export function embeddedDefaults(baseDir: string): CairnConfig {
  return {
    version: 1,
    stateDir: resolve(baseDir, '.cairn'),
    volumeDrivers: { file: { plugin: 'file', options: { directory: resolve(baseDir, '.cairn/volumes') } } },
    targets: { posix: { plugin: 'posix', options: { directory: resolve(baseDir, '.cairn/repository'), repository: { init: true } } } },
  };
}

/**
 * The config file named for a command: `explicit` (from `--config`), else `$CAIRN_CONFIG` (an empty
 * one counts as unset), else undefined. An explicit empty name is `INVALID_INPUT`
 * (`details.option: "config"`): `--config "$CONFIG"` with the variable unset names no file, and
 * must not fall back to a config or the embedded defaults in the working directory.
 */
export function namedConfig(explicit: string | undefined): string | undefined {
  if (explicit === '') throw new CairnError('INVALID_INPUT', '--config names no file (an empty path)', { driver: 'config', details: { option: 'config' } });
  return explicit ?? (process.env.CAIRN_CONFIG || undefined);
}

/**
 * Finds and loads the config: `explicit` (from `--config`), else `$CAIRN_CONFIG`, else the first
 * of CONFIG_NAMES in `cwd`, else the embedded defaults. `NOT_FOUND` when a named file is
 * missing; `INVALID_INPUT` naming the file, the path in it and what is expected when it is wrong,
 * and for a file found in `cwd` (not named) that belongs to another user (assertOwnConfig).
 * Every error about a config file carries its absolute path in `details.file`.
 */
export async function loadConfig(explicit: string | undefined, cwd = process.cwd()): Promise<LoadedConfig> {
  const named = namedConfig(explicit);
  if (named) {
    const file = resolve(cwd, named);
    const text = await readText(file);
    if (text === undefined) throw new CairnError('NOT_FOUND', `config file ${file} does not exist`, { driver: 'config', details: { file } });
    return fromText(file, text);
  }
  for (const [i, name] of CONFIG_NAMES.entries()) {
    const file = resolve(cwd, name);
    const text = await readText(file);
    if (text === undefined) continue;
    await assertOwnConfig(file);
    if (text.trim() === '') {
      // An unfinished init's file found first shadows a config written by hand beside it: say so.
      const shadowed = await firstPresent(CONFIG_NAMES.slice(i + 1).map((n) => resolve(cwd, n)));
      if (shadowed) throw emptyConfig(file, shadowed);
    }
    return fromText(file, text);
  }
  const config = embeddedDefaults(cwd);
  await assertOwnDefaultsDir(config.stateDir);
  return { file: undefined, config, stateDir: config.stateDir };
}

/**
 * `INVALID_INPUT` (details.file) when `file`, a config found in the working directory rather than
 * named, belongs to neither this process's user nor root: the config says where backups go and
 * where restores come from (isTrustedOwner: root running through sudo also trusts the invoking
 * user's), so a file another user left in a directory a command runs from (/tmp, a shared directory) would send this user's volumes to that user's repository, or restore that
 * user's data over them (as git refuses a repository of another owner: safe.directory). A file
 * named with --config or CAIRN_CONFIG is trusted: its user chose it.
 */
async function assertOwnConfig(file: string): Promise<void> {
  const uid = process.geteuid?.();
  if (uid === undefined) return;
  // The link found there as well as what it names: a link another user planted may name a file
  // of root's (trusted) that is no config of ours.
  const linkOwner = (await lstat(file)).uid;
  const owner = isTrustedOwner(linkOwner, uid) ? (await stat(file)).uid : linkOwner;
  if (isTrustedOwner(owner, uid)) return;
  throw new CairnError('INVALID_INPUT', `config file ${file} belongs to another user (uid ${owner}), so it is not used unless named: pass --config ${file} (or set CAIRN_CONFIG) if you trust it`, { driver: 'config', details: { file } });
}

/**
 * Whether a file owned by `owner` may be trusted by a process of effective user `uid`: its own,
 * root's, and, for root run through sudo, the invoking user's (`SUDO_UID`, as git's
 * safe.directory does): `sudo cairn …` in one's own project directory uses one's own config.
 */
function isTrustedOwner(owner: number, uid: number): boolean {
  if (owner === uid || owner === 0) return true;
  const sudoUid = process.env.SUDO_UID;
  return uid === 0 && sudoUid !== undefined && /^\d+$/.test(sudoUid) && Number(sudoUid) === owner;
}

/**
 * `INVALID_INPUT` (details.file) when `dir`, the embedded defaults' `./.cairn` (volumes,
 * repository and state), exists and belongs (itself, or the link there) to neither this process's
 * user nor root: another user made it beforehand, in a directory both may write in, to read or
 * fill what this user keeps there. None yet is fine: this user's command makes it.
 */
async function assertOwnDefaultsDir(dir: string): Promise<void> {
  const uid = process.geteuid?.();
  const owner = await lstat(dir).then(
    (s) => s.uid,
    () => undefined,
  );
  if (uid === undefined || owner === undefined || isTrustedOwner(owner, uid)) return;
  throw new CairnError('INVALID_INPUT', `${dir}, where the embedded defaults keep volumes and backups, belongs to another user (uid ${owner}): run Cairn from another directory, or write a config`, { driver: 'config', details: { file: dir } });
}

/** Plugin options that name a directory (`runtimeDir`: the qcow2 driver's daemon sockets). */
const PATH_OPTIONS = ['directory', 'runtimeDir'] as const;

/**
 * Plugin options that name a program (the qcow2 driver's `qemuImg`, `qemuStorageDaemon`): one
 * with a slash is a path, resolved as PATH_OPTIONS are; a bare name (`qemu-img`) is left as it
 * is, to be looked up on PATH when run, as a shell does.
 */
const PROGRAM_OPTIONS = ['qemuImg', 'qemuStorageDaemon'] as const;

/**
 * Parses and validates a config document; `file` names it in errors. Every path the config holds
 * is made absolute against `file`'s directory, never the working directory: `stateDir`, each
 * driver's and target's `directory` and `runtimeDir` options (PATH_OPTIONS), `qemuImg` and
 * `qemuStorageDaemon` when they hold a slash (PROGRAM_OPTIONS: a bare name stays one, for PATH), and a target's `repository.passphrase` given as
 * `file:<relative path>` (as systemd and nginx resolve paths in their configs).
 */
export function fromText(file: string, text: string): LoadedConfig {
  const parsed = ConfigSchema.safeParse(parseText(file, text));
  if (!parsed.success) throw invalidConfig(file, parsed.error);
  const baseDir = dirname(file);
  const config = parsed.data;
  const absolute = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  for (const entry of [...Object.values(config.volumeDrivers), ...Object.values(config.targets)]) {
    for (const key of PATH_OPTIONS) {
      const value = entry.options[key];
      if (typeof value === 'string' && value !== '') entry.options[key] = absolute(value);
    }
    for (const key of PROGRAM_OPTIONS) {
      const value = entry.options[key];
      if (typeof value === 'string' && value.includes('/')) entry.options[key] = absolute(value);
    }
  }
  for (const target of Object.values(config.targets)) {
    const repository = target.options.repository;
    if (repository?.passphrase?.startsWith('file:')) repository.passphrase = `file:${absolute(repository.passphrase.slice(5))}`;
  }
  config.stateDir = absolute(config.stateDir);
  return { file, config, stateDir: config.stateDir };
}

/**
 * The document in `text`: YAML for a `.yaml`/`.yml` file, else JSON (a leading byte order mark
 * ignored). `INVALID_INPUT` when it is malformed or an object in it sets a key twice, with
 * `details.file`, and the message and `details.line`/`details.column` (1-based) saying where. An empty file (or one of whitespace alone) is `INVALID_INPUT` saying so:
 * it is what `cairn init` holds while it writes the config, or leaves when it is killed.
 */
function parseText(file: string, text: string): unknown {
  if (text.trim() === '') throw emptyConfig(file);
  if (/\.ya?ml$/i.test(file)) {
    const r = parseYamlDocument(text);
    if ('value' in r) return r.value;
    const { message, line, column } = r.problem;
    throw new CairnError('INVALID_INPUT', `${file}: not valid YAML: ${message}`, { driver: 'config', details: { file, line, column } });
  }
  // A byte order mark (Windows editors write one) is no part of the document, as YAML's parser takes it.
  const json = text.startsWith('\uFEFF') ? text.slice(1) : text;
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (cause) {
    // JSON.parse's message often says nowhere where (Node 20): the place is found by a scan of its own.
    const at = jsonErrorPosition(json);
    const where = at ? ` at line ${at.line}, column ${at.column}` : '';
    throw new CairnError('INVALID_INPUT', `${file}: not valid JSON${where}: ${(cause as Error).message}`, { driver: 'config', cause, details: { file, ...at } });
  }
  const duplicate = firstDuplicateKey(json);
  if (duplicate) {
    const { key, line, column } = duplicate;
    throw new CairnError('INVALID_INPUT', `${file}: key ${JSON.stringify(key)} is set twice in one object, at line ${line}, column ${column} the second time: keep one`, { driver: 'config', details: { file, line, column, key } });
  }
  return value;
}

/**
 * INVALID_INPUT for an empty config file: what `cairn init` holds while it writes the config, or
 * leaves when it is killed. With `shadowed`, a config file found after it in the working
 * directory, which the empty one hides: the advice is then to remove the empty one.
 */
function emptyConfig(file: string, shadowed?: string): CairnError {
  const advice = shadowed
    ? `remove it to use ${shadowed}, or run \`cairn init --force\``
    : 'run `cairn init --force` or write the config';
  const message = `config file ${file} is empty: a \`cairn init\` is still writing it, or one was killed before it finished; ${advice}`;
  return new CairnError('INVALID_INPUT', message, { driver: 'config', details: { file, ...(shadowed ? { shadowed } : {}) } });
}

/** The first of `files` that exists (a stat that fails otherwise than ENOENT counts as existing). */
async function firstPresent(files: string[]): Promise<string | undefined> {
  for (const f of files) {
    const missing = await stat(f).then(
      () => false,
      (err: NodeJS.ErrnoException) => err.code === 'ENOENT' || err.code === 'ENOTDIR',
    );
    if (!missing) return f;
  }
  return undefined;
}

/** One INVALID_INPUT listing every issue as `<file>: <path>: <what is expected>`. */
function invalidConfig(file: string, error: z.ZodError): CairnError {
  const issues = error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(top level)', message: i.message }));
  const lines = issues.map((i) => `${file}: ${i.path}: ${i.message}`);
  return new CairnError('INVALID_INPUT', `invalid config\n  ${lines.join('\n  ')}`, { driver: 'config', details: { file, issues } });
}

/**
 * The file's text, or `undefined` when it does not exist. A directory, a path through a file, or
 * more than CONFIG_LIMIT bytes is `INVALID_INPUT`; any other failure to read it `UNAVAILABLE`.
 */
async function readText(file: string): Promise<string | undefined> {
  try {
    return await readBounded(file, CONFIG_LIMIT, `config file ${file}`);
  } catch (err) {
    if (err instanceof CairnError && err.code === 'INVALID_INPUT') throw new CairnError('INVALID_INPUT', err.message, { driver: 'config', details: { file } });
    if (err instanceof CairnError) throw new CairnError(err.code, `config file ${file} cannot be read: ${err.message}`, { driver: 'config', cause: err, details: { file } });
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if ((err as NodeJS.ErrnoException).code === 'EISDIR') throw new CairnError('INVALID_INPUT', `config file ${file} is a directory`, { driver: 'config', cause: err, details: { file } });
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') throw new CairnError('INVALID_INPUT', `config file ${file}: a directory on its path is a file`, { driver: 'config', cause: err, details: { file } });
    throw new CairnError('UNAVAILABLE', `config file ${file} cannot be read: ${(err as Error).message}`, { driver: 'config', cause: err, details: { file } });
  }
}
