import 'reflect-metadata';
import { Container, injectable, multiInject, optional, type ContainerModule } from 'inversify';
import type { BackupService } from '../contracts/backup-service.js';
import type { ObjectStore } from '../contracts/object-store.js';
import type { VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError, isCairnError, toCairnError } from '../errors.js';
import { readSecretFile } from './secret-file.js';
import { ChunkedBackupService, type ChunkedServiceOptions } from '../repository/chunked-backup-service.js';
import {
  BackupServiceFactory,
  DriverRegistry as DriverRegistryToken,
  ObjectStoreFactory,
  VolumeDriverFactory,
  type DriverFactory,
  type FactoryContext,
} from './tokens.js';

type Kind = 'volume driver' | 'backup service' | 'object store';

/**
 * The factories of one kind by name. A factory must be `{name, description, create}` with a
 * non-empty `name` and a function `create`: anything else a plugin module binds is
 * `INVALID_INPUT` naming it (by name, or by its place among the factories of its kind); two of
 * one name are `CONFLICT`.
 */
function byName<T>(kind: Kind, factories: DriverFactory<T>[]): Map<string, DriverFactory<T>> {
  const map = new Map<string, DriverFactory<T>>();
  for (const [i, f] of factories.entries()) {
    const name = typeof f?.name === 'string' && f.name !== '' ? f.name : undefined;
    if (name === undefined || typeof f.create !== 'function') {
      const which = name === undefined ? `#${i + 1} (it has no name)` : `"${name}"`;
      throw new CairnError('INVALID_INPUT', `a plugin module binds the ${kind} factory ${which}, which is not {name, description, create()}`, {
        driver: 'registry',
        details: { kind, ...(name === undefined ? { index: i + 1 } : { plugin: name }) },
      });
    }
    if (map.has(name)) throw new CairnError('CONFLICT', `two plugins register the ${kind} "${name}"`, { driver: 'registry', details: { kind, plugin: name } });
    map.set(name, f);
  }
  return map;
}

/**
 * Names of the variables a `DriverRegistry.secret()` of this process took out of the environment:
 * names only, never values, so that another registry's NOT_FOUND can say where the variable went.
 */
const takenNames = new Set<string>();

/**
 * Resolves drivers by plugin name. Built from the factories that plugin modules bound; refuses
 * duplicate names at construction (`CONFLICT`), and unknown names at use (`NOT_FOUND`).
 *
 * Plugins are code the registry does not trust to keep the contract: every error it lets out is a
 * CairnError that names the plugin. A factory that rejects (or throws) with a CairnError keeps
 * its code, tagged with the plugin's name when it has no driver of its own; a system error keeps
 * the code toCairnError gives it; anything else (a TypeError, a plain Error) is `UNAVAILABLE`:
 * the driver could not be built, never `INTERNAL`. A factory that resolves with no object is
 * `INVALID_INPUT`. The cause is kept. Messages never hold a secret this registry has read
 * (`secret()`): a plugin's message that repeats one has it replaced by `***`; when its message,
 * its details or any cause below it shows one, the cause is dropped (and details that show it).
 */
@injectable()
export class DriverRegistry implements FactoryContext {
  private readonly volumes: Map<string, DriverFactory<VolumeDriver>>;
  private readonly services: Map<string, DriverFactory<BackupService>>;
  private readonly stores: Map<string, DriverFactory<ObjectStore>>;

  constructor(
    @multiInject(VolumeDriverFactory) @optional() volumes: DriverFactory<VolumeDriver>[] = [],
    @multiInject(BackupServiceFactory) @optional() services: DriverFactory<BackupService>[] = [],
    @multiInject(ObjectStoreFactory) @optional() stores: DriverFactory<ObjectStore>[] = [],
  ) {
    this.volumes = byName('volume driver', volumes ?? []);
    this.services = byName('backup service', services ?? []);
    this.stores = byName('object store', stores ?? []);
  }

  /**
   * Composes plugin modules into a container and returns its registry. `CONFLICT` on duplicate
   * names; `INVALID_INPUT`, tagged `registry`, for a module that cannot be loaded (not a
   * ContainerModule, or its load throws: `details.module` is its 1-based place in `modules`) and
   * for a factory of the wrong shape (see byName).
   */
  static compose(...modules: ContainerModule[]): DriverRegistry {
    const container = new Container();
    for (const [i, module] of modules.entries()) {
      try {
        container.load(module);
      } catch (cause) {
        const message = isCairnError(cause) ? cause.message : ((cause as Error)?.message ?? String(cause));
        throw new CairnError('INVALID_INPUT', `plugin module #${i + 1} cannot be loaded: ${message}`, { driver: 'registry', cause, details: { module: i + 1 } });
      }
    }
    container.bind(DriverRegistryToken).to(DriverRegistry).inSingletonScope();
    try {
      return container.get<DriverRegistry>(DriverRegistryToken);
    } catch (cause) {
      if (isCairnError(cause)) throw cause;
      throw new CairnError('INVALID_INPUT', `the plugin modules cannot be composed: ${(cause as Error)?.message ?? String(cause)}`, { driver: 'registry', cause });
    }
  }

  names(): { volumeDrivers: string[]; backupServices: string[]; objectStores: string[] } {
    return { volumeDrivers: [...this.volumes.keys()], backupServices: [...this.services.keys()], objectStores: [...this.stores.keys()] };
  }

  describe(): { kind: Kind; name: string; description: string }[] {
    const rows = (kind: Kind, m: Map<string, DriverFactory<unknown>>) => [...m.values()].map((f) => ({ kind, name: f.name, description: f.description }));
    return [...rows('volume driver', this.volumes), ...rows('backup service', this.services), ...rows('object store', this.stores)];
  }

  async createVolumeDriver(plugin: string, options: Record<string, unknown> = {}): Promise<VolumeDriver> {
    return this.build('volume driver', this.volumes, plugin, options);
  }

  /**
   * Builds a backup service. A plugin that registers only an ObjectStore (posix, s3, swift…)
   * gets the chunked repository over it: `options.repository` holds the repository's own
   * options (`passphrase` as a secret reference `env:NAME`/`file:path`, `init`, `workers`,
   * `uploads`, `name`: the target's name in records, default the plugin's name, and `onWarning`:
   * the function told of failures that fail no job, such as locks left to expire, default
   * process.emitWarning); every other option goes to the store. A plugin's own backup service
   * gets `options` as they are.
   *
   * The store built here is the chunked service's: its `close()` closes the store
   * (ChunkedServiceOptions.ownsStore). The passphrase is read before the store is built: one that
   * cannot be read fails with nothing made (no repository directory). When anything fails once
   * the store is built (the repository cannot be opened or made), the store is closed before the
   * error is raised; a failure of that close is dropped, the first error is the one raised.
   */
  async createBackupService(plugin: string, options: Record<string, unknown> = {}): Promise<BackupService> {
    if (this.services.has(plugin) || !this.stores.has(plugin)) return this.build('backup service', this.services, plugin, options);
    const { repository = {}, ...storeOptions } = options as { repository?: unknown };
    if (repository === null || typeof repository !== 'object' || Array.isArray(repository)) {
      throw new CairnError('INVALID_INPUT', `the options of the backup service "${plugin}": repository must be an object of options`, { driver: 'registry', details: { field: 'repository', plugin } });
    }
    const { passphrase, ...rest } = repository as { passphrase?: string } & Record<string, unknown>;
    // Read before the store is built: building it may make its directory (posix's createDirectory),
    // which a passphrase that cannot be read must not leave behind.
    const secret = passphrase === undefined ? undefined : await this.secret(passphrase);
    const store = await this.objectStore(plugin, storeOptions);
    try {
      return await ChunkedBackupService.open(store, {
        ...(rest as ChunkedServiceOptions),
        name: typeof rest.name === 'string' ? rest.name : plugin,
        passphrase: secret,
        ownsStore: true,
      });
    } catch (err) {
      await Promise.resolve()
        .then(() => store.close?.())
        .catch(() => undefined);
      throw err;
    }
  }

  async objectStore(plugin: string, options: Record<string, unknown> = {}): Promise<ObjectStore> {
    return this.build('object store', this.stores, plugin, options);
  }

  /**
   * Reads `env:NAME` or `file:/path` (the file's content, one trailing newline dropped). Errors,
   * tagged `registry`: `INVALID_INPUT` for other forms; `NOT_FOUND` for an unset (or empty)
   * variable; a file's as readSecretFile says (secret-file.ts: at most 64 KiB are read).
   *
   * A variable read is taken out of this process's environment (`process.env`): every child
   * process spawned afterwards (qemu-img, qemu-storage-daemon, flock…) inherits the environment,
   * where its user could read the secret in /proc/<pid>/environ for as long as it runs, and its
   * core dumps would hold it. Children spawned before the read still hold it. The value is kept
   * by this registry only, for its own later reads of the name (init reads a passphrase twice; a
   * config's targets may share one); set again, the variable is read anew (and taken again).
   * Another registry of the process (one composed later, e.g. for the next test or request) sees
   * the environment as it is: a variable taken and not set again is `NOT_FOUND` there, its message
   * saying it was taken; never a value its caller may since have unset or meant to change.
   */
  async secret(reference: string): Promise<string> {
    if (typeof reference === 'string' && reference.startsWith('env:')) {
      const name = reference.slice(4);
      // Only the environment's own variables: `env:constructor` or `env:__proto__` is no secret.
      const value = Object.hasOwn(process.env, name) ? process.env[name] : this.fromEnv.get(name);
      if (typeof value !== 'string' || value === '') {
        const taken = takenNames.has(name) ? ' (a registry of this process read it and took it out of the environment: read it through that registry, or give file:/path)' : '';
        throw new CairnError('NOT_FOUND', `environment variable ${name} is not set${taken}`, { driver: 'registry' });
      }
      this.fromEnv.set(name, value);
      takenNames.add(name);
      delete process.env[name];
      this.secrets.add(value);
      return value;
    }
    if (typeof reference === 'string' && reference.startsWith('file:')) {
      const value = await readSecretFile(reference.slice(5));
      if (value !== '') this.secrets.add(value);
      return value;
    }
    throw new CairnError('INVALID_INPUT', 'a secret must be given as env:NAME or file:/path', { driver: 'registry' });
  }

  /** Secrets read by `secret()`, kept out of the messages of the errors plugins raise. */
  private readonly secrets = new Set<string>();

  /** The variables this registry took out of the environment (`secret()`), by name: its own later reads of them. */
  private readonly fromEnv = new Map<string, string>();

  /** Builds a driver with `plugin`'s factory; its failures as the class comment says. */
  private async build<T>(kind: Kind, map: Map<string, DriverFactory<T>>, plugin: string, options: Record<string, unknown>): Promise<T> {
    const f = this.factory(kind, map, plugin);
    let driver: T;
    try {
      driver = await f.create(options, this);
    } catch (cause) {
      throw this.factoryError(kind, plugin, cause);
    }
    if (driver === null || (typeof driver !== 'object' && typeof driver !== 'function')) {
      throw new CairnError('INVALID_INPUT', `the ${kind} plugin "${plugin}" built no ${kind} (its factory resolved with ${driver === null ? 'null' : typeof driver})`, {
        driver: 'registry',
        details: { kind, plugin },
      });
    }
    return driver;
  }

  /**
   * A factory's failure as a CairnError naming `plugin` (see the class comment). When it shows a
   * secret (leaksSecret), the cause is dropped.
   */
  private factoryError(kind: Kind, plugin: string, cause: unknown): CairnError {
    const leaks = this.leaksSecret(cause);
    const kept = leaks ? {} : { cause };
    if (isCairnError(cause)) {
      if (cause.driver !== undefined && !leaks) return cause;
      // A tagged message already starts with its driver's name: kept as it is, less the secret.
      const details = leaks && this.holdsSecret(safeJson(cause.details)) ? {} : cause.details;
      return new CairnError(cause.code, this.redact(cause.message), { ...kept, driver: cause.driver === undefined ? plugin : undefined, details: { ...details, kind, plugin } });
    }
    const e = toCairnError(cause);
    const code = e.code === 'INTERNAL' ? 'UNAVAILABLE' : e.code;
    return new CairnError(code, this.redact(`the ${kind} plugin "${plugin}" could not be built: ${e.message}`), { ...kept, driver: plugin, details: { kind, plugin } });
  }

  /** Whether `err` shows a secret: in its message, its details, or those of a cause below it. */
  private leaksSecret(err: unknown): boolean {
    const seen = new Set<unknown>();
    for (let e = err; e !== undefined && e !== null && !seen.has(e); e = (e as { cause?: unknown }).cause) {
      seen.add(e);
      const { message, details } = e as { message?: unknown; details?: unknown };
      if (this.holdsSecret(typeof message === 'string' ? message : typeof e === 'object' ? '' : String(e)) || this.holdsSecret(safeJson(details))) return true;
      if (typeof e !== 'object' && typeof e !== 'function') break;
    }
    return false;
  }

  private holdsSecret(text: string): boolean {
    for (const s of this.secrets) if (text.includes(s)) return true;
    return false;
  }

  private redact(text: string): string {
    let out = text;
    for (const s of this.secrets) out = out.split(s).join('***');
    return out;
  }

  private factory<T>(kind: Kind, map: Map<string, DriverFactory<T>>, plugin: string): DriverFactory<T> {
    const f = map.get(plugin);
    if (!f) {
      const known = [...map.keys()].join(', ') || 'none';
      throw new CairnError('NOT_FOUND', `no ${kind} plugin named "${plugin}" (known: ${known})`, { driver: 'registry' });
    }
    return f;
  }
}

/** `value` as JSON, or '' when it cannot be (a cycle, a BigInt). */
function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    return '';
  }
}
