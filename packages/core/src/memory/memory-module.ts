import { pluginModule } from '../di/plugin-module.js';
import { CairnError } from '../errors.js';
import { MemoryBackupService } from './memory-backup-service.js';
import { MemoryObjectStore } from './memory-object-store.js';
import { MemoryVolumeDriver } from './memory-volume-driver.js';

/**
 * `v`, a size option, or `fallback` when it is absent. `INVALID_INPUT` (`details.field`), as
 * DriverFactory.create says, unless it is a positive power of two.
 */
const powerOfTwo = (v: unknown, name: string, fallback: number): number => {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || 2 ** Math.round(Math.log2(v)) !== v) {
    throw new CairnError('INVALID_INPUT', `${name} must be a positive power of two, got ${JSON.stringify(v)}`, { driver: 'memory', details: { field: name } });
  }
  return v;
};

/** The memory reference drivers as a plugin: `memory` volume driver, backup service and object store. */
export const memoryModule = pluginModule({
  volumeDrivers: [
    {
      name: 'memory',
      description: 'volumes in memory (reference driver, lost on exit)',
      create: async (o) => new MemoryVolumeDriver({ pageSize: powerOfTwo(o.pageSize, 'pageSize', 4096) }),
    },
  ],
  backupServices: [
    {
      name: 'memory',
      description: 'backups in memory with dependent incremental chains (reference service, lost on exit)',
      create: async (o) => new MemoryBackupService('memory', powerOfTwo(o.blockSize, 'blockSize', 64 * 1024)),
    },
  ],
  objectStores: [
    {
      name: 'memory',
      description: 'objects in memory (reference store, lost on exit)',
      create: async () => new MemoryObjectStore(),
    },
  ],
});
