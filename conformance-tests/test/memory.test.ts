import { describe, expect, it } from 'vitest';
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

// The assertStored group passes a service without that (optional) method: the reference has it,
// so the group's checks run against it.
describe('MemoryBackupService', () => {
  it('implements the optional assertStored, which the suite then checks', () => {
    expect(typeof new MemoryBackupService().assertStored).toBe('function');
  });
});

catalogSuite('MemoryCatalog', {
  factory: async () => new MemoryCatalog(),
  atomicIfAbsent: true,
});
