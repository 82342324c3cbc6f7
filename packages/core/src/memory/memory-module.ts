import { pluginModule } from '../di/plugin-module.js';
import { MemoryBackupService } from './memory-backup-service.js';
import { MemoryObjectStore } from './memory-object-store.js';
import { MemoryVolumeDriver } from './memory-volume-driver.js';

const positive = (v: unknown, name: string, fallback: number): number => {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || (v & (v - 1)) !== 0) {
    throw new TypeError(`${name} must be a positive power of two`);
  }
  return v;
};

/** The memory reference drivers as a plugin: `memory` volume driver, backup service and object store. */
export const memoryModule = pluginModule({
  volumeDrivers: [
    {
      name: 'memory',
      description: 'volumes in memory (reference driver, lost on exit)',
      create: async (o) => new MemoryVolumeDriver({ pageSize: positive(o.pageSize, 'pageSize', 4096) }),
    },
  ],
  backupServices: [
    {
      name: 'memory',
      description: 'backups in memory with dependent incremental chains (reference service, lost on exit)',
      create: async (o) => new MemoryBackupService('memory', positive(o.blockSize, 'blockSize', 64 * 1024)),
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
