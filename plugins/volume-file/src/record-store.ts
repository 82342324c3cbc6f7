import { KeyedMutex, SidecarStore } from '@cairn/core';
import { ensureOwnedFile, makeOwnedDirectory, OWNED } from './dir-owner.js';
import { lockWithin } from './file-lock.js';
import { Layout } from './layout.js';
import { namingFullDisk } from './no-space.js';
import { readSnapshotRecord, readVolumeRecord, type SnapshotRecord, type VolumeRecord } from './records.js';

/** How long a metadata change waits for another process's metadata change, in ms. */
const META_LOCK_WAIT_MS = 10_000;

/**
 * The driver's sidecars (core's SidecarStore) plus its layout. Several driver instances (several
 * processes) may share a directory, so every read-modify-write also holds the metadata lock: an
 * in-process mutex plus flock on `.lock`. A full file system (ENOSPC, EDQUOT) fails a sidecar
 * write, or the making of a directory or `.lock`, `UNAVAILABLE` naming that file (no-space.ts);
 * the sidecar keeps what it held. What it creates (the directories, `.lock`, sidecars) gets the
 * owner of the directory it is made in when root works in another user's directory (dir-owner.ts).
 */
export class RecordStore extends SidecarStore<VolumeRecord, SnapshotRecord> {
  readonly layout: Layout;
  private tree: Promise<void> | undefined;

  constructor(directory: string, driver: string) {
    const layout = new Layout(directory);
    const meta = new KeyedMutex();
    super({
      driver,
      dir: (kind) => layout.dir(kind),
      readVolume: readVolumeRecord,
      readSnapshot: readSnapshotRecord,
      setup: () => namingFullDisk(layout.lockFile, 'creating lock file', driver, () => ensureOwnedFile(layout.lockFile)),
      newFile: OWNED, // sidecars keep the directory's owner
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

  /**
   * Core's init, after the driver's directory and its `volumes` and `snapshots` are made with
   * owners (makeOwnedDirectory). Retried after a failure, as core's is.
   */
  override init(): Promise<void> {
    this.tree ??= (async () => {
      for (const dir of [this.layout.directory, this.layout.dir('volume'), this.layout.dir('snapshot')]) {
        await namingFullDisk(dir, 'making directory', this.options.driver, () => makeOwnedDirectory(dir, this.options.driver));
      }
    })().catch((err: unknown) => {
      this.tree = undefined;
      throw err;
    });
    return this.tree.then(() => super.init());
  }

  /** Core's put (atomic and durable), a full file system's error naming the sidecar. */
  override async put(record: VolumeRecord | SnapshotRecord): Promise<void> {
    const path = this.sidecarPath(record.kind, record.id);
    await namingFullDisk(path, 'writing sidecar', this.options.driver, () => super.put(record));
  }

  /** Runs `fn` holding the metadata lock (in-process and across processes). `BUSY` after 10 s of waiting. */
  async exclusively<T>(fn: () => Promise<T>): Promise<T> {
    await this.init();
    return this.guarded(fn);
  }
}
