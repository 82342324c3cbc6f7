import { statSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { CairnError, ChunkedBackupService, isAlreadyExists, toCairnError, unlessNotFound, type CompressionAlgorithm, type DriverRegistry } from '@cairn/core';
import { Option, type Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import { withoutContext } from '../command-runner.js';
import { fromText, namedConfig } from '../config/load.js';
import { claimConfigFile, existingConfigError } from '../io/config-claim.js';
import { accessError } from '../io/input-file.js';
import { outputPath } from '../io/output-path.js';
import { removeDeadTempDirs } from '../io/owned-temp-dir.js';
import { writeFileWhole } from '../io/partial-file.js';
import { composeRegistry } from '../context.js';
import { renderFields } from '../output/table.js';
import { shownText } from '../output/terminal-text.js';
import { parseSize, optionParser } from '../output/units.js';

interface InitOptions {
  yes: boolean;
  volumesDir: string;
  repositoryDir: string;
  encrypt: boolean;
  passphraseEnv?: string;
  passphraseFile?: string;
  compression?: CompressionAlgorithm;
  chunkSize?: number;
  force: boolean;
}

/** `cairn init`: writes a config (file volumes + posix repository) and initialises the repository. */
export function registerInitCommand(program: Command): void {
  program
    .command('init')
    .description('create a config (file volumes, posix repository) and initialise the repository')
    .option('-y, --yes', 'ask nothing; take the defaults and the options given', false)
    .option('--volumes-dir <dir>', 'where the file driver keeps volumes (relative to the config file)', '.cairn/volumes')
    .option('--repository-dir <dir>', 'where the posix repository lives (relative to the config file)', '.cairn/repository')
    .option('--encrypt', 'encrypt the repository (needs --passphrase-env or --passphrase-file)', false)
    .option('--passphrase-env <NAME>', 'environment variable holding the passphrase (the config stores env:NAME)')
    .option('--passphrase-file <path>', 'file holding the passphrase (the config stores file:/absolute/path)')
    .addOption(new Option('--compression <algorithm>', 'default compression (default zstd)').choices(COMPRESSIONS))
    .option('--chunk-size <size>', 'chunk size, a power of two from 64KiB to 16MiB (default 128KiB)', optionParser(parseChunkSize))
    .option('--force', 'overwrite an existing config file', false)
    .action(
      withoutContext<InitOptions>(async (out, _args, opts, globals) => {
        // Everything that can be refused is refused before anything is created on disk.
        // As for every other command (namedConfig): an empty CAIRN_CONFIG is unset, an empty --config refused.
        const file = resolve(namedConfig(globals.config) ?? 'cairn.config.json');
        // A config that is a symbolic link is written through (the link stays), as exports are.
        const written = await outputPath(file, opts.force).catch(async (err: unknown) => {
          if (!isAlreadyExists(err)) throw err;
          await sweepBeside(await realpath(file).catch(() => file));
          throw await existingConfigError(file, err as CairnError);
        });
        const o = opts.yes ? opts : await ask(opts);
        if (o.passphraseEnv && o.passphraseFile) throw new CairnError('INVALID_INPUT', '--passphrase-env and --passphrase-file exclude each other');
        if ((o.passphraseEnv || o.passphraseFile) && !o.encrypt) o.encrypt = true;
        if (o.encrypt && !o.passphraseEnv && !o.passphraseFile) {
          throw new CairnError('INVALID_INPUT', '--encrypt needs --passphrase-env NAME or --passphrase-file PATH (a passphrase is never taken from the command line)');
        }
        if (!o.volumesDir.trim() || !o.repositoryDir.trim()) throw new CairnError('INVALID_INPUT', 'the volume and repository directories must not be empty');
        const passphrase = o.passphraseEnv ? `env:${o.passphraseEnv}` : o.passphraseFile ? `file:${resolve(o.passphraseFile)}` : undefined;
        const doc = {
          version: 1,
          stateDir: '.cairn',
          volumeDrivers: { file: { plugin: 'file', options: { directory: o.volumesDir } } },
          targets: { posix: { plugin: 'posix', options: { directory: o.repositoryDir, ...(passphrase ? { repository: { passphrase } } : {}) } } },
          defaultTarget: 'posix',
        };
        const text = /\.ya?ml$/i.test(file) ? toYaml(doc) : `${JSON.stringify(doc, null, 2)}\n`;
        const loaded = fromText(file, text); // validates and resolves paths exactly as a later load will
        const target = loaded.config.targets.posix!;
        const registry = composeRegistry();
        if (passphrase !== undefined) await assertPassphrase(registry, passphrase);
        // Without --force the config's name is taken before the repository is made: of several
        // inits at once one goes on, the others stop here having made nothing (no orphan repository).
        // The one that goes on publishes over its own empty file only (ConfigClaim.publish).
        const claim = opts.force
          ? undefined
          : await claimConfigFile(written).catch(async (err: unknown) => {
              if (isAlreadyExists(err)) await sweepBeside(written);
              throw err;
            });
        try {
          const { repository, ...storeOptions } = target.options as { repository?: Record<string, unknown> } & Record<string, unknown>;
          const existed = await holdsRepository(registry, storeOptions);
          const init = { ...(o.compression ? { compression: o.compression } : {}), ...(o.chunkSize ? { chunkSize: o.chunkSize } : {}) };
          const service = await registry.createBackupService('posix', { ...target.options, repository: { ...repository, init } });
          try {
            // Whole or not at all: a failed write leaves no config (or, with --force, the old one).
            // Without --force, only over this init's own empty file (never over another init's config).
            const writing = claim ? claim.publish(text) : writeFileWhole(written, text);
            const published = await writing.catch((err: unknown) => Promise.reject(configNotWritten(accessError(err, written, 'write'), file, String(target.options.directory), existed)));
            if (!published) throw configWrittenMeanwhile(file, String(target.options.directory), existed);
            // In place, but its directory entry may not survive a crash: said, not failed (Published).
            if (published.notDurable) out.warn(published.notDurable.message);
            const stats = service instanceof ChunkedBackupService ? await service.stats() : undefined;
            const result = {
              config: file,
              volumesDirectory: loaded.config.volumeDrivers.file!.options.directory,
              repositoryDirectory: target.options.directory,
              repositoryId: stats?.id,
              repositoryCreated: !existed,
              encrypted: stats?.encrypted ?? !!passphrase,
            };
            out.result(result, () =>
              renderFields([
                ['config', result.config],
                ['volumes', String(result.volumesDirectory)],
                ['repository', `${String(result.repositoryDirectory)} (${existed ? 'existing, adopted' : 'created'})`],
                ['repository id', result.repositoryId],
                ['encrypted', result.encrypted ? `yes (passphrase from ${passphrase})` : 'no'],
              ]),
            );
          } finally {
            await service.close?.();
          }
        } finally {
          await claim?.release();
        }
      }),
    );
}

/**
 * Whether the posix store of `storeOptions` holds a repository (its `config` object), asked before
 * the backup service makes or adopts it. The store opened to ask is closed on every path, the
 * answer or the error of `head` given either way (a failure of that close is dropped).
 */
async function holdsRepository(registry: DriverRegistry, storeOptions: Record<string, unknown>): Promise<boolean> {
  const store = await registry.objectStore('posix', storeOptions);
  try {
    return (await unlessNotFound(store.head('config'))) !== undefined;
  } finally {
    await Promise.resolve()
      .then(() => store.close?.())
      .catch(() => undefined);
  }
}

/**
 * Removes the `.cairn-partial-` directories beside the config `written` whose owner is certainly
 * dead (removeDeadTempDirs: an init killed while it published the config there), when an init
 * stops because the config exists: such an init leaves its (empty) config and that directory, and
 * no later init gets as far as making its own there (createPartialFile's sweep). Never throws.
 */
async function sweepBeside(written: string): Promise<void> {
  await removeDeadTempDirs('.cairn-partial-', dirname(written));
}

/**
 * `ALREADY_EXISTS` for a plain init whose config `file` another init wrote (with `--force`) while
 * this one made or adopted (`existed`) its `repository`, which stays, named in the message and in
 * details.repository, for the user to remove or adopt.
 */
function configWrittenMeanwhile(file: string, repository: string, existed: boolean): CairnError {
  const made = existed ? 'adopted the existing repository' : 'made a repository';
  // Empty: another plain init claimed the name in the instant this one's claim left it to link.
  const claimed = statSync(file, { throwIfNoEntry: false })?.size === 0;
  const what = claimed ? 'was claimed by another cairn init meanwhile (it is empty while that init runs)' : 'was written by another cairn init meanwhile and is left as it is';
  const message = `${file} ${what}; this init ${made} at ${repository}, which stays: remove it, or adopt it with cairn init --force --repository-dir ${repository}`;
  return new CairnError('ALREADY_EXISTS', message, { details: { file, repository } });
}

/**
 * The failure to write the config `file` (a full disk, an I/O error), after the `repository` was
 * made or adopted (`existed`): its code (as toCairnError maps it: ENOSPC is `UNAVAILABLE`), with a
 * message and details naming the config and the repository, which stays.
 */
function configNotWritten(err: unknown, file: string, repository: string, existed: boolean): CairnError {
  const e = toCairnError(err);
  const made = existed ? 'adopted the existing repository' : 'made a repository';
  const message = `${file} could not be written (${e.message}); this init ${made} at ${repository}, which stays: free the space or fix the cause, then run cairn init --force --repository-dir ${repository} to adopt it, or remove it`;
  return new CairnError(e.code, message, { cause: err, details: { ...e.details, file, repository } });
}

/** The compression algorithms a repository offers (`--compression`). */
const COMPRESSIONS: readonly CompressionAlgorithm[] = ['zstd', 'lz4', 'gzip', 'none'];

/** `--chunk-size`: a size that is a power of two from 64 KiB to 16 MiB. `INVALID_INPUT` otherwise. */
function parseChunkSize(text: string): number {
  const n = parseSize(text);
  if (n < 64 * 1024 || n > 16 * 1024 * 1024 || (n & (n - 1)) !== 0) throw new CairnError('INVALID_INPUT', `"${text}" is not a power of two from 64KiB to 16MiB`);
  return n;
}

/**
 * Resolves the passphrase reference now, so that an unset variable or a missing file (`NOT_FOUND`),
 * a file this process may not read (`UNAVAILABLE`), a directory, an empty passphrase or one that
 * is not UTF-8 text (`INVALID_INPUT`) is refused before the repository directory is made. A key
 * file of binary bytes is read as UTF-8 with every invalid byte as U+FFFD (so that repositories
 * made that way still open): a weaker passphrase than the file holds, so a new repository refuses
 * one (encode the key, e.g. base64).
 */
async function assertPassphrase(registry: DriverRegistry, reference: string): Promise<void> {
  const passphrase = await registry.secret(reference);
  if (passphrase === '') throw new CairnError('INVALID_INPUT', `the passphrase from ${reference} is empty`);
  if (passphrase.includes('\uFFFD')) {
    throw new CairnError('INVALID_INPUT', `the passphrase from ${reference} is not UTF-8 text (a binary key file?): encode it, e.g. as base64, so that every byte counts`);
  }
}

/** Asks for what was not given (empty answer = the default shown in brackets). */
async function ask(opts: InitOptions): Promise<InitOptions> {
  // On a terminal, readline asks line by line; from a pipe, the answers are read up front (one per line).
  const rl = process.stdin.isTTY ? createInterface({ input: process.stdin, output: process.stderr }) : undefined;
  const piped = rl ? [] : (await readAll()).split(/\r?\n/);
  try {
    const q = async (question: string, dflt: string) => {
      if (rl) return (await rl.question(`${question} [${shownText(dflt)}]: `)).trim() || dflt;
      process.stderr.write(`${question} [${shownText(dflt)}]: \n`);
      return (piped.shift() ?? '').trim() || dflt;
    };
    const o = { ...opts };
    o.volumesDir = await q('volume directory', o.volumesDir);
    o.repositoryDir = await q('repository directory', o.repositoryDir);
    if (!o.passphraseEnv && !o.passphraseFile) {
      o.encrypt = /^y/i.test(await q('encrypt the repository? (y/n)', o.encrypt ? 'y' : 'n'));
      if (o.encrypt) {
        const src = await q('passphrase source: env:NAME or file:/path', 'env:CAIRN_PASSPHRASE');
        if (src.startsWith('env:')) o.passphraseEnv = src.slice(4);
        else if (src.startsWith('file:')) o.passphraseFile = src.slice(5);
        else throw new CairnError('INVALID_INPUT', 'the passphrase source must be env:NAME or file:/path');
      }
    }
    return o;
  } finally {
    rl?.close();
  }
}

async function readAll(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const p of process.stdin) parts.push(p as Buffer);
  return Buffer.concat(parts).toString('utf8');
}
