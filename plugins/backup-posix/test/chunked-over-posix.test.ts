import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backupServiceSuite } from '@cairn/conformance';
import { ChunkedBackupService, type BackupRecord } from '@cairn/core';
import { PosixObjectStore } from '../src/index.js';

// The embedded default target end to end: core's chunked repository over this store, running
// the shared backup-service suite (each case in a fresh directory).


const dirs = new Map<ChunkedBackupService, string>();

/** Flips one byte in the middle of a chunk the backup uses, in the pack file on disk. */
async function corruptChunk(service: ChunkedBackupService, store: PosixObjectStore, backup: BackupRecord): Promise<void> {
  const repo = service.repository;
  const manifest = await repo.readManifest(backup.id);
  await repo.index.refresh();
  const loc = repo.index.get((await manifest.chunks.slice()).find((c) => c !== null)!)!;
  const key = `packs/${loc.pack}`;
  const pack = await store.get(key);
  pack[loc.offset + Math.floor(loc.length / 2)]! ^= 0x40;
  await store.put(key, pack);
}

backupServiceSuite('ChunkedBackupService over PosixObjectStore', {
  capabilities: {
    incremental: true,
    dependentChains: false,
    cascadeDelete: false,
    dedup: true,
    encryption: true,
    changedBlockTracking: true,
    vmConfig: true,
    compression: ['zstd', 'lz4', 'gzip', 'none'],
  },
  volumeSize: 8 * 1024 * 1024,
  factory: async () => {
    const directory = await mkdtemp(join(tmpdir(), 'cairn-posix-chunked-'));
    const store = await PosixObjectStore.open({ directory });
    const service = await ChunkedBackupService.open(store, {
      name: 'chunked',
      workers: 0,
      init: { chunkSize: 256 * 1024, packSize: 1024 * 1024, kdf: { N: 1024, r: 8, p: 1 } },
    });
    dirs.set(service, directory);
    return { service, corrupt: (b) => corruptChunk(service, store, b) };
  },
  dispose: async (service) => {
    await service.close?.();
    const dir = dirs.get(service as ChunkedBackupService);
    if (dir) await rm(dir, { recursive: true, force: true });
  },
});
