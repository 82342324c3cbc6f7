import { open } from 'node:fs/promises';
import { KeyedMutex, SidecarStore } from '@cairn/core';
import { lockWithin } from './file-lock.js';
import { Layout } from './layout.js';
import { readSnapshotRecord, readVolumeRecord, type SnapshotRecord, type VolumeRecord } from './records.js';

/** How long a metadata change waits for another process's metadata change, in ms. */
const META_LOCK_WAIT_MS = 10_000;

/**
 * The driver's sidecars (core's SidecarStore) plus its layout. Several driver instances (several
 * processes) may share a directory, so every read-modify-write also holds the metadata lock: an
 * in-process mutex plus flock on `.lock`.
 */
export class RecordStore extends SidecarStore<VolumeRecord, SnapshotRecord> {
  readonly layout: Layout;

  constructor(directory: string, driver: string) {
    const layout = new Layout(directory);
    const meta = new KeyedMutex();
    super({
      driver,
      dir: (kind) => layout.dir(kind),
      readVolume: readVolumeRecord,
      readSnapshot: readSnapshotRecord,
      setup: async () => (await open(layout.lockFile, 'a', 0o600)).close(),
      guard: (fn) =>
        meta.run('meta', async () => {
          const lock = await lockWithin(layout.lockFile, 'exclusive', META_LOCK_WAIT_MS, driver);
          try {
            return await fn();
          } finally {
            await lock.release();
          }
        }),
    });
    this.layout = layout;
  }

  /** Runs `fn` holding the metadata lock (in-process and across processes). `BUSY` after 10 s of waiting. */
  async exclusively<T>(fn: () => Promise<T>): Promise<T> {
    await this.init();
    return this.guarded(fn);
  }
}
