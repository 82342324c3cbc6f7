import { readdir, rm, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CairnError, isCairnError } from '../errors.js';
import { syncDir, type NewFileOptions } from '../util/durable-file.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { makeDirectories } from '../util/make-directories.js';
import { isUuid, writeSidecar, type SnapshotSidecar, type VolumeSidecar } from './sidecar-records.js';

export type SidecarKind = 'volume' | 'snapshot';

export interface SidecarStoreOptions<V extends VolumeSidecar, S extends SnapshotSidecar> {
  /** Driver name for errors. */
  driver: string;
  /** Directory holding the `<id>.json` sidecars of a kind. */
  dir(kind: SidecarKind): string;
  readVolume(path: string, driver: string): Promise<V>;
  readSnapshot(path: string, driver: string): Promise<S>;
  /** One-time setup beyond the two sidecar directories (more directories, a lock file). */
  setup?(): Promise<void>;
  /** Wraps every read-modify-write, e.g. in a cross-process lock. Default: the in-process mutex alone. */
  guard?<T>(fn: () => Promise<T>): Promise<T>;
  /** How each sidecar's new file is made (writeFileAtomic's options), e.g. giving it an owner. */
  newFile?: NewFileOptions;
}

/**
 * Read-modify-writes in this process, keyed by sidecar directory and id: shared by every store
 * instance, so two driver instances on one directory in one process serialize too.
 */
const inProcess = new KeyedMutex();

const byCreation = (a: { createdAt: string; id: string }, b: { createdAt: string; id: string }) =>
  a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

/**
 * The JSON sidecars of a file-based volume driver, read fresh on every call (so several driver
 * instances on one directory see the same volumes). Writes are atomic and durable; a sidecar's
 * presence is what makes a volume or snapshot exist, and it names the record it holds (a sidecar
 * whose `id` is not its file's is `CORRUPT`). Only UUIDs name sidecars. Read-modify-writes are
 * serialized per volume in-process (across the instances on one directory too), and through
 * `guard` beyond it.
 */
export class SidecarStore<V extends VolumeSidecar, S extends SnapshotSidecar> {
  private ready: Promise<void> | undefined;

  constructor(protected readonly options: SidecarStoreOptions<V, S>) {}

  /** Path of a sidecar. `INVALID_INPUT` for an id that is not a UUID (it could name a file elsewhere). */
  sidecarPath(kind: SidecarKind, id: string): string {
    if (!isUuid(id)) throw new CairnError('INVALID_INPUT', `${kind} id ${JSON.stringify(String(id))} is not a UUID`, { driver: this.options.driver, details: { field: 'id' } });
    return join(this.options.dir(kind), `${id}.json`);
  }

  /**
   * Creates the directory tree and runs `setup` (core's makeDirectories: a place that takes no
   * new directories, such as /proc/<pid>, is `UNAVAILABLE` tagged with the driver, at once; other
   * system errors are thrown as they are). Once it has succeeded it is not run again; calls while
   * an attempt runs share it; after a failed attempt the next call tries again (a permission
   * fixed, a mount back), so a long-lived driver instance recovers without a restart.
   */
  init(): Promise<void> {
    this.ready ??= (async () => {
      await makeDirectories(this.options.dir('volume'), { driver: this.options.driver });
      await makeDirectories(this.options.dir('snapshot'), { driver: this.options.driver });
      await this.options.setup?.();
    })().catch((err: unknown) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  /** `NOT_FOUND` when unknown (or not a UUID); `CORRUPT` when its sidecar is damaged. */
  async volume(id: string): Promise<V> {
    return this.read('volume', id, this.options.readVolume);
  }

  /** Same errors as `volume`. */
  async snapshot(id: string): Promise<S> {
    return this.read('snapshot', id, this.options.readSnapshot);
  }

  /** Every volume, ordered by creation. `CORRUPT` if any sidecar is damaged. */
  async volumes(): Promise<V[]> {
    return this.volumesAmong(await this.names('volume'));
  }

  /** Every snapshot (of every volume), ordered by creation. `CORRUPT` if any sidecar is damaged. */
  async snapshots(): Promise<S[]> {
    return this.snapshotsAmong(await this.names('snapshot'));
  }

  /**
   * Every name in `kind`'s directory, from one read of it: for volumesAmong / snapshotsAmong, and
   * for a driver's own files beside the sidecars (a deletion's marker, say), so that a listing
   * reads the directory once and can tend to those files before it reads any sidecar.
   */
  async names(kind: SidecarKind): Promise<string[]> {
    await this.init();
    return readdir(this.options.dir(kind));
  }

  /** volumes(), of the sidecars among `names` (a read of the volumes' directory: names). */
  volumesAmong(names: readonly string[]): Promise<V[]> {
    return this.among(names, (id) => this.volume(id));
  }

  /** snapshots(), of the sidecars among `names` (a read of the snapshots' directory: names). */
  snapshotsAmong(names: readonly string[]): Promise<S[]> {
    return this.among(names, (id) => this.snapshot(id));
  }

  /** Writes a new or replaced sidecar atomically. Idempotent. `INVALID_INPUT` for an id that is not a UUID. */
  async put(record: V | S): Promise<void> {
    await this.init();
    await writeSidecar(this.sidecarPath(record.kind, record.id), record, this.options.newFile);
  }

  /** Removes a sidecar durably: the record is gone from that instant. Idempotent: an id that is not a UUID names none. */
  async remove(kind: SidecarKind, id: string): Promise<void> {
    if (!isUuid(id)) return;
    await unlink(this.sidecarPath(kind, id)).catch((err: { code?: string }) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await syncDir(this.options.dir(kind));
  }

  /**
   * Undoes a create that failed (a volume, a snapshot), whatever step failed: all or nothing. The
   * sidecar goes first, as in a deletion (it may be in place although its write failed: renamed,
   * then the directory fsync failed), and the create's data files (`files`: its image, a bitmap
   * directory) only once no sidecar names them. So the failed create leaves nothing listed, or at
   * worst, when the sidecar cannot be removed, a listed volume or snapshot whose data, written in
   * full before the sidecar was, is still there: it attaches, and deletes as any other. Never
   * throws: the caller raises the create's own error.
   */
  async discardCreated(kind: SidecarKind, id: string, files: readonly string[]): Promise<void> {
    await this.remove(kind, id).catch(() => {});
    const named = await stat(this.sidecarPath(kind, id)).then(
      () => true,
      (err: { code?: string }) => err.code !== 'ENOENT', // cannot tell: keep the data
    );
    if (named) return;
    for (const file of files) await rm(file, { recursive: true, force: true }).catch(() => {});
  }

  /**
   * Read-modify-write of a volume sidecar: `fn` edits the record in place and may return a value;
   * the record is written back only when `fn` returns without throwing.
   */
  async updateVolume<T>(id: string, fn: (r: V) => Promise<T> | T): Promise<T> {
    await this.init();
    return inProcess.run(`${resolve(this.options.dir('volume'))}\0${id}`, () =>
      this.guarded(async () => {
        const record = await this.volume(id);
        const result = await fn(record);
        await this.put(record);
        return result;
      }),
    );
  }

  /** Runs `fn` inside `guard` (when given). */
  protected guarded<T>(fn: () => Promise<T>): Promise<T> {
    return this.options.guard ? this.options.guard(fn) : fn();
  }

  private async read<R>(kind: SidecarKind, id: string, reader: (path: string, driver: string) => Promise<R>): Promise<R> {
    await this.init();
    if (!isUuid(id)) throw this.notFound(kind, id);
    const path = this.sidecarPath(kind, id);
    let record: R;
    try {
      record = await reader(path, this.options.driver);
    } catch (err) {
      throw isCairnError(err) && err.code === 'NOT_FOUND' ? this.notFound(kind, id) : err;
    }
    if ((record as { id?: unknown }).id !== id) throw new CairnError('CORRUPT', `sidecar ${path} holds the record of another ${kind}`, { driver: this.options.driver, details: { id } });
    return record;
  }

  private async among<R extends { createdAt: string; id: string }>(names: readonly string[], read: (id: string) => Promise<R>): Promise<R[]> {
    const ids = names.filter((n) => n.endsWith('.json') && isUuid(n.slice(0, -5))).map((n) => n.slice(0, -5));
    const records: R[] = [];
    for (const id of ids) {
      try {
        records.push(await read(id));
      } catch (err) {
        if (!(isCairnError(err) && err.code === 'NOT_FOUND')) throw err; // deleted meanwhile is fine
      }
    }
    return records.sort(byCreation);
  }

  private notFound(kind: SidecarKind, id: string): CairnError {
    return new CairnError('NOT_FOUND', `${kind} ${String(id)} not found`, { driver: this.options.driver });
  }
}
