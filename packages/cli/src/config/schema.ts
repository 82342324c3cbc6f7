import { chunkSizeProblem, compressionProblem, MAX_DEFAULT_CHUNK_WORKERS, packSizeProblem } from '@cairn/core';
import { z } from 'zod';

/** A secret reference: the value itself never appears in the config. */
export const SecretRef = z
  .string()
  .regex(/^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$/, 'expected a secret reference `env:NAME` or `file:/path` (never the secret itself)');

/** One driver instance: which plugin builds it and the plugin's own options. */
const DriverEntry = z.strictObject({
  /** Registry name of the plugin, e.g. `file`, `posix`. */
  plugin: z.string().min(1, 'expected a plugin name such as "file" or "posix"'),
  /** Options handed to the plugin's factory; `directory` may be relative to the config file. */
  options: z.record(z.string(), z.unknown()).default({}),
});

/**
 * The most chunk worker threads a target's `repository.workers` may ask for (docs/cli.md, "Config"):
 * core's cap on its own default (256), so the default always passes the config's check.
 */
export const MAX_WORKERS = MAX_DEFAULT_CHUNK_WORKERS;

/** A field checked by one of core's repository checks (`problem`: why the value is refused, or undefined). */
const checked = (problem: (v: unknown) => string | undefined) =>
  z.unknown().superRefine((v, ctx) => {
    const message = problem(v);
    if (message) ctx.addIssue({ code: 'custom', message });
  });

/**
 * `repository.init` as an object: the layout of a repository created when missing, and nothing
 * else. Checked here, with core's rules, so that a wrong value names the config and its path
 * before any directory is made, and a misspelt key (`chunksize`) is refused rather than ignored:
 * a repository keeps its chunk size and compression for ever.
 */
const RepositoryInit = z.strictObject({
  chunkSize: checked(chunkSizeProblem).optional(),
  compression: checked(compressionProblem).optional(),
  packSize: checked(packSizeProblem).optional(),
});

/** The repository options of a target built over an object store (chunked repository). */
const RepositoryOptions = z.strictObject({
  passphrase: SecretRef.optional(),
  init: z.union([z.boolean(), RepositoryInit]).optional(),
  /**
   * Threads hashing, compressing and sealing chunks (0: none, inline). At most MAX_WORKERS: each
   * thread gets its own read-ahead in shared memory (8 MiB per thread), and 1000 made a backup
   * grow to 6 GiB and fail after 45 s instead of refusing the config.
   */
  workers: z.number().int().min(0).max(MAX_WORKERS, `expected at most ${MAX_WORKERS} threads`).optional(),
});

const TargetEntry = DriverEntry.extend({
  options: z
    .looseObject({ repository: RepositoryOptions.optional() })
    .default({}),
});

const Name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'expected a name of letters, digits, `.`, `_` or `-`');

/**
 * `cairn.config.json` / `cairn.config.yaml`. Paths inside are relative to the file's directory.
 * docs/cli.md documents every field.
 */
export const ConfigSchema = z
  .strictObject({
    /** Config format version. Default 1. */
    version: z.literal(1).default(1),
    /** Where the CLI keeps its own state (running jobs). Default `.cairn`. */
    stateDir: z.string().min(1).default('.cairn'),
    /** Volume drivers by name. */
    volumeDrivers: z.record(Name, DriverEntry).refine((r) => Object.keys(r).length > 0, 'expected at least one volume driver'),
    /** The volume driver commands use. Default: the first of `volumeDrivers`. */
    defaultVolumeDriver: Name.optional(),
    /** Backup targets by name. */
    targets: z.record(Name, TargetEntry).refine((r) => Object.keys(r).length > 0, 'expected at least one backup target'),
    /** The target backups go to when none is named; its repository also holds the catalog. Default: the first of `targets`. */
    defaultTarget: Name.optional(),
  })
  .superRefine((c, ctx) => {
    // Own names only: "constructor" or "toString" are on every object's prototype.
    if (c.defaultVolumeDriver && !Object.hasOwn(c.volumeDrivers, c.defaultVolumeDriver)) {
      ctx.addIssue({ code: 'custom', path: ['defaultVolumeDriver'], message: `expected one of the names in volumeDrivers (${Object.keys(c.volumeDrivers).join(', ')})` });
    }
    if (c.defaultTarget && !Object.hasOwn(c.targets, c.defaultTarget)) {
      ctx.addIssue({ code: 'custom', path: ['defaultTarget'], message: `expected one of the names in targets (${Object.keys(c.targets).join(', ')})` });
    }
  });

export type CairnConfig = z.infer<typeof ConfigSchema>;
export type DriverConfig = z.infer<typeof DriverEntry>;
