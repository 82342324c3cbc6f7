import {
  BackupManager,
  CairnError,
  ChunkedBackupService,
  DriverRegistry,
  hasCode,
  RepositoryCatalog,
  toCairnError,
  unlessNotFound,
  type BackupService,
  type Volume,
  type VolumeDriver,
} from '@cairn/core';
import { posixModule } from '@cairn/backup-posix';
import { fileVolumeModule } from '@cairn/volume-file';
import { qcow2VolumeModule } from '@cairn/volume-qcow2';
import { loadConfig, type LoadedConfig } from './config/load.js';
import { repositoryWorkers } from './config/workers.js';
import type { Output } from './output/output.js';
import { printRecovery } from './output/recovery-report.js';

/** Options every command accepts (see docs/cli.md, "Global options"). */
export interface GlobalOptions {
  config?: string;
  /** Volume driver name from the config. Default: `defaultVolumeDriver` or the first. */
  driver?: string;
  json?: boolean;
  quiet?: boolean;
}

/**
 * The plugins this binary composes (docs/cli.md, "Plugins"): volume drivers `file` and `qcow2`,
 * the object store `posix`. Composing a plugin only registers its factory: a driver is built, and
 * its programs run (qcow2: qemu-img, qemu-storage-daemon), only when the config names it and a
 * command asks for it (CliContext.volumes). Secrets are read by core's registry: a missing file is
 * `NOT_FOUND`, one this process may not read `UNAVAILABLE` naming it (details.file).
 */
export function composeRegistry(): DriverRegistry {
  return DriverRegistry.compose(fileVolumeModule, qcow2VolumeModule, posixModule);
}

/** A driver that holds resources until closed (qcow2: its qemu-storage-daemon). */
interface Closable {
  close(): Promise<void>;
}
const closable = (x: unknown): x is Closable => typeof (x as Partial<Closable> | null)?.close === 'function';

/**
 * What a command works with, built lazily from the config: the registry, the volume driver, the
 * targets and the BackupManager (its catalog is a RepositoryCatalog in the default target's
 * repository). `close()` releases every target (worker threads); call it in `finally`.
 */
export class CliContext {
  readonly registry = composeRegistry();
  private volumeDriver?: Promise<VolumeDriver>;
  private readonly services = new Map<string, Promise<BackupService>>();
  private managerPromise?: Promise<BackupManager>;
  /** Chunked repositories opened from now on start their worker pools while their keys are derived. */
  private startWorkers = false;

  private constructor(
    readonly loaded: LoadedConfig,
    readonly globals: GlobalOptions,
    readonly out: Output,
  ) {}

  static async create(globals: GlobalOptions, out: Output): Promise<CliContext> {
    return new CliContext(await loadConfig(globals.config), globals, out);
  }

  /** A context over an already loaded config (the demo builds its own). */
  static forConfig(loaded: LoadedConfig, globals: GlobalOptions, out: Output): CliContext {
    return new CliContext(loaded, globals, out);
  }

  get stateDir(): string {
    return this.loaded.stateDir;
  }

  /**
   * How to cancel job `jobId` from another shell: `cairn backup cancel` with this config named by
   * its absolute path (found from any directory and any environment), or, on the embedded
   * defaults (whose state is under the working directory), run from this directory.
   */
  cancelHint(jobId: string): string {
    const file = this.loaded.file;
    return file ? `cancel with: cairn backup cancel ${jobId} --config ${shellWord(file)}` : `cancel with: cairn backup cancel ${jobId}, from ${shellWord(process.cwd())}`;
  }

  get defaultTargetName(): string {
    const c = this.loaded.config;
    return c.defaultTarget ?? Object.keys(c.targets)[0]!;
  }

  /** The configured volume driver (`--driver` or the default). `NOT_FOUND` for an unknown name. */
  volumes(): Promise<VolumeDriver> {
    this.volumeDriver ??= (async () => {
      const c = this.loaded.config;
      const name = this.globals.driver ?? c.defaultVolumeDriver ?? Object.keys(c.volumeDrivers)[0]!;
      const entry = Object.hasOwn(c.volumeDrivers, name) ? c.volumeDrivers[name] : undefined;
      if (!entry) throw new CairnError('NOT_FOUND', `volume driver ${name} is not in the config (known: ${Object.keys(c.volumeDrivers).join(', ')})`, { driver: 'config' });
      return this.registry.createVolumeDriver(entry.plugin, entry.options);
    })();
    return this.volumeDriver;
  }

  /**
   * Says that this command will move data (back up, restore, verify, serve): chunked repositories
   * opened after this start their worker threads while their keys are derived, on a core the
   * derivation leaves idle (see the repository's `startWorkers`). Call it before anything opens a
   * target.
   */
  expectDataFlow(): void {
    this.startWorkers = true;
  }

  /** A configured target by name (default: the default target). `NOT_FOUND` for an unknown name. */
  target(name = this.defaultTargetName): Promise<BackupService> {
    let p = this.services.get(name);
    if (!p) {
      const entry = Object.hasOwn(this.loaded.config.targets, name) ? this.loaded.config.targets[name] : undefined;
      if (!entry) return Promise.reject(new CairnError('NOT_FOUND', `backup target ${name} is not in the config (known: ${Object.keys(this.loaded.config.targets).join(', ')})`, { driver: 'config' }));
      p = this.buildTarget(name, entry.plugin, { ...entry.options });
      p.catch(() => {});
      this.services.set(name, p);
    }
    return p;
  }

  /**
   * Builds target `name`. Records name their target by `service.name`, and the manager finds a
   * record's target by that name, so the service carries the config's target name (the registry
   * passes `repository.name` to a chunked repository over an object-store plugin). A chunked
   * repository's warnings (locks it could not release) go to stderr as the manager's do.
   */
  private async buildTarget(name: string, plugin: string, options: Record<string, unknown>): Promise<BackupService> {
    if (this.registry.names().objectStores.includes(plugin)) {
      const onWarning = (warning: CairnError) => this.out.warn(warning.message);
      const configured = (options.repository as Record<string, unknown> | undefined) ?? {};
      // The config's limit holds for the default too (repositoryWorkers).
      const workers = repositoryWorkers(configured.workers as number | undefined);
      const repository = { ...configured, workers, name, onWarning, ...(this.startWorkers ? { startWorkers: true } : {}) };
      return this.registry.createBackupService(plugin, { ...options, repository });
    }
    const service = await this.registry.createBackupService(plugin, options);
    if (service.name === name) return service;
    throw new CairnError('INVALID_INPUT', `target ${name} must be named ${service.name}, the name its plugin gives the service`, { driver: 'config' });
  }

  /** A target that is a chunked repository (every target over an object store). `NOT_SUPPORTED` otherwise. */
  async repository(name?: string): Promise<ChunkedBackupService> {
    const service = await this.target(name);
    if (!(service instanceof ChunkedBackupService)) throw new CairnError('NOT_SUPPORTED', `target ${service.name} is not a chunked repository`);
    return service;
  }

  /** The catalog the manager uses: records in the default target's repository. */
  async catalog(): Promise<RepositoryCatalog> {
    return new RepositoryCatalog((await this.repository(this.defaultTargetName)).repository);
  }

  /**
   * The BackupManager over every configured target. With `recover`, resolves what an earlier
   * crash left in flight first (mutating commands do); core leaves the records of live processes
   * (a job still running elsewhere) alone. `readRate` (bytes/s) throttles reads from volumes.
   * `maxDataJobs`: backups and restores run at once (BackupManagerOptions.maxDataJobs; `cairn
   * serve --max-data-jobs`). Both are taken from the first call. Manager warnings go to stderr.
   */
  async manager(options: { recover?: boolean; readRate?: number; maxDataJobs?: number } = {}): Promise<BackupManager> {
    this.managerPromise ??= (async () => {
      const targets: Record<string, BackupService> = {};
      for (const name of Object.keys(this.loaded.config.targets)) targets[name] = await this.target(name);
      const volumes = await this.volumes();
      // One budget for every backup of this process (a server's `--read-rate`); a cancelled
      // backup stops waiting for it at once.
      const manager = new BackupManager({ volumes, targets, defaultTarget: this.defaultTargetName, catalog: await this.catalog(), readRate: options.readRate, maxDataJobs: options.maxDataJobs });
      manager.on('warning', (e) => this.out.warn(e.message));
      return manager;
    })();
    const manager = await this.managerPromise;
    if (options.recover) {
      printRecovery(this.out, await manager.recover(), 'an earlier run');
    }
    return manager;
  }

  /** A volume by id, or by name when exactly one volume has it. `NOT_FOUND`, or `CONFLICT` when ambiguous. */
  async resolveVolume(ref: string): Promise<Volume> {
    const driver = await this.volumes();
    const all = await driver.listVolumes();
    const byId = all.find((v) => v.id === ref);
    if (byId) return byId;
    const named = all.filter((v) => v.name === ref);
    if (named.length === 1) return named[0]!;
    if (named.length > 1) throw new CairnError('CONFLICT', `${named.length} volumes are named ${ref}; use an id`);
    throw new CairnError('NOT_FOUND', `no volume with id or name ${ref}`);
  }

  /**
   * Deletes the volume `ref` names (resolveVolume) by core's flow (BackupManager.deleteVolume of
   * the manager `manager` resolves to, asked after the resolve) and resolves to its id. A `ref` no
   * volume has (by id or name) is still deleted as an id: a delete of it killed midway is one the
   * driver finishes, or has finished in this process (a listing, this resolve's included, does),
   * and core's delete then succeeds (delete-volume.ts: retriedDelete). By name it cannot be: the
   * name went with the volume's record. Otherwise resolveVolume's `NOT_FOUND`.
   */
  async deleteVolume(ref: string, manager: () => Promise<BackupManager>): Promise<string> {
    let unknown: unknown;
    const id = await this.resolveVolume(ref).then(
      (v) => v.id,
      (err: unknown) => (hasCode(err, 'NOT_FOUND') ? ((unknown = err), ref) : Promise.reject(err)),
    );
    await (await manager()).deleteVolume(id).catch((err: unknown) => Promise.reject(unknown !== undefined && hasCode(err, 'NOT_FOUND') ? unknown : err));
    return id;
  }

  /**
   * The volume id whose backups a listing filtered by `ref` shows (`backup list --volume`,
   * `GET /v1/backups?volumeId=`): a volume's id or unique name resolved; a value naming no volume
   * is taken as the id of a volume that may be gone (its backups outlive it). A name several
   * volumes share is `CONFLICT`, as everywhere: listing none would say the volume has no backups.
   */
  async listedVolumeId(ref: string): Promise<string> {
    return (await unlessNotFound(this.resolveVolume(ref)))?.id ?? ref;
  }

  /**
   * Releases the volume driver, if one was built and has a `close` (qcow2 detaches what is still
   * attached and stops its daemon, so that it writes its dirty bitmaps), and every opened target.
   * Idempotent; never throws: resolves with the volume driver's close failure, if any (qcow2: a
   * daemon that could not be stopped, UNAVAILABLE with `details.leftBehind`, which keeps its
   * images open and locked), for the caller to report (command-runner.ts), else undefined.
   */
  async close(): Promise<CairnError | undefined> {
    const volumeDriver = this.volumeDriver;
    this.volumeDriver = undefined;
    const driver = await volumeDriver?.catch(() => undefined); // one that failed to build holds nothing
    let failure: CairnError | undefined;
    if (closable(driver)) await driver.close().catch((err: unknown) => (failure = toCairnError(err)));
    for (const p of this.services.values()) {
      try {
        await (await p).close?.();
      } catch {
        /* a target that failed to open has nothing to close */
      }
    }
    this.services.clear();
    return failure;
  }
}

/** `word` as one shell word: as it is when it holds only safe characters, else single-quoted. */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
