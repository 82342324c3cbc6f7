/**
 * @cairn/backup-posix — the `posix` ObjectStore: objects as files under a directory (local disk
 * or NFS), sharded, written atomically and durably. The embedded default backup target.
 */
import { pluginModule } from '@cairn/core';
import { parsePosixOptions } from './options.js';
import { PosixObjectStore } from './posix-object-store.js';

export { PosixObjectStore, DEFAULT_TEMP_AGE_MS } from './posix-object-store.js';
export { TEMP_REFRESH_MS } from './temp-refresh.js';
export { DEFAULT_RESERVE_BYTES, RESERVE_NAME } from './space-reserve.js';
export { MAKING_NAME } from './reserve-marker.js';
export type { PosixObjectStoreOptions } from './options.js';
export { SHARD_MIN_HEX, isShardedName, isTempName, keyToSegments, segmentsToKey } from './key-layout.js';

/**
 * The plugin's DI module: the `posix` object store. Options: `directory` (required, absolute),
 * `createDirectory` (default true), `reserveBytes` (the space reserve, default 64 MiB, 0 disables
 * it). `INVALID_INPUT` with `details.option` naming a bad option;
 * `UNAVAILABLE` when the directory is missing and may not be created.
 */
export const posixModule = pluginModule({
  objectStores: [
    {
      name: 'posix',
      description: 'objects as files under a directory (local disk or NFS), sharded, atomic and durable puts',
      create: async (options) => PosixObjectStore.open(parsePosixOptions(options)),
    },
  ],
});
