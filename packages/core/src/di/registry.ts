import 'reflect-metadata';
import { Container, injectable, multiInject, optional, type ContainerModule } from 'inversify';
import type { BackupService } from '../contracts/backup-service.js';
import type { ObjectStore } from '../contracts/object-store.js';
import type { VolumeDriver } from '../contracts/volume-driver.js';
import { CairnError } from '../errors.js';
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

function byName<T>(kind: Kind, factories: DriverFactory<T>[]): Map<string, DriverFactory<T>> {
  const map = new Map<string, DriverFactory<T>>();
  for (const f of factories) {
    if (map.has(f.name)) throw new CairnError('CONFLICT', `two plugins register the ${kind} "${f.name}"`, { driver: 'registry' });
    map.set(f.name, f);
  }
  return map;
}

/**
 * Resolves drivers by plugin name. Built from the factories that plugin modules bound; refuses
 * duplicate names at construction (`CONFLICT`), and unknown names at use (`NOT_FOUND`).
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

  /** Composes plugin modules into a container and returns its registry. `CONFLICT` on duplicate names. */
  static compose(...modules: ContainerModule[]): DriverRegistry {
    const container = new Container();
    container.load(...modules);
    container.bind(DriverRegistryToken).to(DriverRegistry).inSingletonScope();
    return container.get<DriverRegistry>(DriverRegistryToken);
  }

  names(): { volumeDrivers: string[]; backupServices: string[]; objectStores: string[] } {
    return { volumeDrivers: [...this.volumes.keys()], backupServices: [...this.services.keys()], objectStores: [...this.stores.keys()] };
  }

  describe(): { kind: Kind; name: string; description: string }[] {
    const rows = (kind: Kind, m: Map<string, DriverFactory<unknown>>) => [...m.values()].map((f) => ({ kind, name: f.name, description: f.description }));
    return [...rows('volume driver', this.volumes), ...rows('backup service', this.services), ...rows('object store', this.stores)];
  }

  async createVolumeDriver(plugin: string, options: Record<string, unknown> = {}): Promise<VolumeDriver> {
    return this.factory('volume driver', this.volumes, plugin).create(options, this);
  }

  /**
   * Builds a backup service. A plugin that registers only an ObjectStore (posix, s3, swift…)
   * gets the chunked repository over it: `options.repository` holds the repository's own
   * options (`passphrase` as a secret reference `env:NAME`/`file:path`, `init`, `workers`,
   * `uploads`, and `name`: the target's name in records, default the plugin's name); every other
   * option goes to the store.
   */
  async createBackupService(plugin: string, options: Record<string, unknown> = {}): Promise<BackupService> {
    if (this.services.has(plugin) || !this.stores.has(plugin)) return this.factory('backup service', this.services, plugin).create(options, this);
    const { repository = {}, ...storeOptions } = options as { repository?: Record<string, unknown> };
    const { passphrase, ...rest } = repository as { passphrase?: string } & Record<string, unknown>;
    const store = await this.objectStore(plugin, storeOptions);
    return ChunkedBackupService.open(store, {
      ...(rest as ChunkedServiceOptions),
      name: typeof rest.name === 'string' ? rest.name : plugin,
      passphrase: passphrase === undefined ? undefined : await this.secret(passphrase),
    });
  }

  async objectStore(plugin: string, options: Record<string, unknown> = {}): Promise<ObjectStore> {
    return this.factory('object store', this.stores, plugin).create(options, this);
  }

  /**
   * Reads `env:NAME` or `file:/path` (the file's content, one trailing newline dropped). Errors,
   * tagged `registry`: `INVALID_INPUT` for other forms; `NOT_FOUND` for an unset (or empty)
   * variable; a file's as readSecretFile says (secret-file.ts: at most 64 KiB are read).
   */
  async secret(reference: string): Promise<string> {
    if (typeof reference === 'string' && reference.startsWith('env:')) {
      const value = process.env[reference.slice(4)];
      if (value === undefined || value === '') throw new CairnError('NOT_FOUND', `environment variable ${reference.slice(4)} is not set`, { driver: 'registry' });
      return value;
    }
    if (typeof reference === 'string' && reference.startsWith('file:')) {
      return readSecretFile(reference.slice(5));
    }
    throw new CairnError('INVALID_INPUT', 'a secret must be given as env:NAME or file:/path', { driver: 'registry' });
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
