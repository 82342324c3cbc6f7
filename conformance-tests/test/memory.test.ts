import { MemoryBackupService, MemoryCatalog, MemoryObjectStore, MemoryVolumeDriver } from '@cairn/core';
import { backupServiceSuite, catalogSuite, objectStoreSuite, volumeDriverSuite } from '../src/index.js';

// The suite tests itself against the memory reference drivers.

volumeDriverSuite('MemoryVolumeDriver', {
  factory: async () => new MemoryVolumeDriver(),
  capabilities: new MemoryVolumeDriver().capabilities,
});

objectStoreSuite('MemoryObjectStore', {
  factory: async () => new MemoryObjectStore(),
  capabilities: new MemoryObjectStore().capabilities,
});

backupServiceSuite('MemoryBackupService', {
  factory: async () => {
    const service = new MemoryBackupService();
    return { service, corrupt: async (b) => service.corrupt(b.id) };
  },
  capabilities: new MemoryBackupService().describe().capabilities,
});

catalogSuite('MemoryCatalog', {
  factory: async () => new MemoryCatalog(),
  atomicIfAbsent: true,
});
