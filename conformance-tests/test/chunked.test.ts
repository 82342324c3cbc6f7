import { ChunkedBackupService, MemoryObjectStore, Repository, RepositoryCatalog, type BackupRecord } from '@cairn/core';
import { backupServiceSuite, catalogSuite } from '../src/index.js';

// The chunked repository over the memory object store: the reference for the repository format.

/** Flips one byte in the middle of the first blob of a chunk the backup uses. */
async function corruptChunk(service: ChunkedBackupService, store: MemoryObjectStore, backup: BackupRecord): Promise<void> {
  const repo = service.repository;
  const manifest = await repo.readManifest(backup.id);
  await repo.index.refresh();
  const id = (await manifest.chunks.slice()).find((c) => c !== null);
  const loc = repo.index.get(id!)!;
  const key = `packs/${loc.pack}`;
  const pack = await store.get(key);
  pack[loc.offset + Math.floor(loc.length / 2)] ^= 0x40;
  await store.put(key, pack);
}

const variants: [string, { workers: number; passphrase?: string; compression?: 'zstd' | 'lz4' | 'gzip' | 'none' }][] = [
  ['zstd, worker threads', { workers: 2 }],
  ['lz4, inline', { workers: 0, compression: 'lz4' }],
  ['encrypted, gzip, worker threads', { workers: 2, passphrase: 'correct horse battery staple', compression: 'gzip' }],
  ['no compression, inline', { workers: 0, compression: 'none' }],
];

for (const [label, v] of variants) {
  const probe = { incremental: true, dependentChains: false, cascadeDelete: false, dedup: true, encryption: true, changedBlockTracking: true, vmConfig: true };
  const order = ['zstd', 'lz4', 'gzip', 'none'] as const;
  const first = v.compression ?? 'zstd';
  backupServiceSuite(`ChunkedBackupService (${label})`, {
    capabilities: { ...probe, compression: [first, ...order.filter((c) => c !== first)] },
    volumeSize: 8 * 1024 * 1024,
    factory: async () => {
      const store = new MemoryObjectStore();
      const service = await ChunkedBackupService.open(store, {
        name: 'chunked',
        workers: v.workers,
        passphrase: v.passphrase,
        init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, compression: v.compression, kdf: { N: 1024, r: 8, p: 1 } },
      });
      return { service, corrupt: (b) => corruptChunk(service, store, b) };
    },
    dispose: async (service) => service.close?.(),
  });
}

// The repository's catalog: records kept in the repository itself, over the memory object store.
const stores = new WeakMap<object, MemoryObjectStore>();
for (const passphrase of [undefined, 'correct horse battery staple']) {
  catalogSuite(`RepositoryCatalog (${passphrase ? 'encrypted' : 'plain'})`, {
    factory: async () => {
      const store = new MemoryObjectStore();
      await Repository.init(store, { passphrase, kdf: { N: 1024, r: 8, p: 1 } });
      const catalog = new RepositoryCatalog(await Repository.open(store, { passphrase }));
      stores.set(catalog, store);
      return catalog;
    },
    // Another Repository over the same store: a process that shares only the store's objects.
    sibling: async (catalog) => new RepositoryCatalog(await Repository.open(stores.get(catalog)!, { passphrase })),
    atomicIfAbsent: new MemoryObjectStore().capabilities.atomicIfAbsent,
  });
}
