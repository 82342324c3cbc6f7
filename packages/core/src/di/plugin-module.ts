import { ContainerModule } from 'inversify';
import {
  BackupServiceFactory,
  ObjectStoreFactory,
  VolumeDriverFactory,
  type BackupServiceFactory as BackupServiceFactoryT,
  type ObjectStoreFactory as ObjectStoreFactoryT,
  type VolumeDriverFactory as VolumeDriverFactoryT,
} from './tokens.js';

export interface PluginContributions {
  volumeDrivers?: VolumeDriverFactoryT[];
  backupServices?: BackupServiceFactoryT[];
  objectStores?: ObjectStoreFactoryT[];
}

/**
 * The one DI module a plugin package exports: it binds each factory under the shared token.
 * Duplicate names are detected by the registry when the container is composed.
 */
export function pluginModule(contributions: PluginContributions): ContainerModule {
  return new ContainerModule(({ bind }) => {
    for (const f of contributions.volumeDrivers ?? []) bind<VolumeDriverFactoryT>(VolumeDriverFactory).toConstantValue(f);
    for (const f of contributions.backupServices ?? []) bind<BackupServiceFactoryT>(BackupServiceFactory).toConstantValue(f);
    for (const f of contributions.objectStores ?? []) bind<ObjectStoreFactoryT>(ObjectStoreFactory).toConstantValue(f);
  });
}
