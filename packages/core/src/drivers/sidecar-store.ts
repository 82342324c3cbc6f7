import { constants } from 'node:fs';
import { open, readdir, rm, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Volume } from '../contracts/volume-driver.js';
import { CairnError, isCairnError } from '../errors.js';
import { syncDir, type NewFileOptions } from '../util/durable-file.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { makeDirectories } from '../util/make-directories.js';
import { isUuid, writeSidecar, type SnapshotSidecar, type VolumeSidecar } from './sidecar-records.js';

export type SidecarKind = 'volume' | 'snapshot';

/**
 * A sidecar that is there but holds no valid record (its read is `CORRUPT`: bit rot, a torn or
 * foreign write, a record of a newer format). A tolerant listing (volumeListing, snapshotListing)
 * reports it beside the readable records instead of failing, so that one damaged sidecar stops
 * nothing about the other volumes.
 */
export interface DamagedSidecar {
  kind: SidecarKind;
  id: string;
  /** The sidecar file. */
  path: string;
  /** What its read failed with (`CORRUPT`). */
  error: CairnError;
  /**
   * For a snapshot: the volume its bytes name (a `"volumeId"` member holding a UUID, in a record
   * that parses or in the text of one that does not), when they name exactly one; else absent —
   * it could be any volume's. Damage may have changed it too: it is a hint, never proof.
   */
  volumeId?: string;
  /** The sidecar file's modification time (ISO 8601): a stand-in for the creation time it no longer tells. */
  modifiedAt: string;
}

/** A sidecar's record, or, when its read is `CORRUPT`, what is known of it. */
export type OrDamaged<R> = { record: R; damaged?: undefined } | { record?: undefined; damaged: DamagedSidecar };

/** A tolerant listing: the readable records ordered by creation, and the damaged sidecars. */
export interface SidecarListing<R> {
  records: R[];
  damaged: DamagedSidecar[];
}

/** The most of a damaged sidecar read for its volume id (sidecar-records.ts reads no larger record). */
const MAX_HINT_BYTES = 16 * 1024 * 1024;
const VOLUME_ID_MEMBER = /"volumeId"\s*:\s*"([^"\\]*)"/g;

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

  /**
   * The volume, or what is known of its damaged sidecar. `NOT_FOUND` when unknown (or not a
   * UUID); errors other than `CORRUPT` (an I/O error: nothing is known) are thrown.
   */
  async volumeOrDamaged(id: string): Promise<OrDamaged<V>> {
    return this.orDamaged('volume', id, () => this.volume(id));
  }

  /** As volumeOrDamaged, of a snapshot (`damaged.volumeId`: the volume its bytes name, if any). */
  async snapshotOrDamaged(id: string): Promise<OrDamaged<S>> {
    return this.orDamaged('snapshot', id, () => this.snapshot(id));
  }

  /** `read()`'s record, or what is known of sidecar `kind` `id` when the read is `CORRUPT`; other errors thrown. */
  private async orDamaged<R>(kind: SidecarKind, id: string, read: () => Promise<R>): Promise<OrDamaged<R>> {
    try {
      return { record: await read() };
    } catch (err) {
      const damaged = await this.damage(kind, id, err);
      if (!damaged) throw err;
      return { damaged };
    }
  }

  /**
   * Every volume, tolerantly: the readable ones ordered by creation, and the damaged sidecars
   * (never `CORRUPT`). `names`: a read of the volumes' directory (names), else one is made.
   */
  async volumeListing(names?: readonly string[]): Promise<SidecarListing<V>> {
    return this.listing(names ?? (await this.names('volume')), (id) => this.volumeOrDamaged(id));
  }

  /** Every snapshot (of every volume), tolerantly, as volumeListing. */
  async snapshotListing(names?: readonly string[]): Promise<SidecarListing<S>> {
    return this.listing(names ?? (await this.names('snapshot')), (id) => this.snapshotOrDamaged(id));
  }

  /** Every volume, ordered by creation. `CORRUPT` if any sidecar is damaged (volumeListing does not fail so). */
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

  /** What is known of sidecar `kind` `id` when `err` is its read's `CORRUPT`; else undefined. */
  private async damage(kind: SidecarKind, id: string, err: unknown): Promise<DamagedSidecar | undefined> {
    if (!(isCairnError(err) && err.code === 'CORRUPT')) return undefined;
    const path = this.sidecarPath(kind, id);
    const modifiedAt = await stat(path).then(
      (st) => st.mtime.toISOString(),
      () => new Date(0).toISOString(),
    );
    const damaged: DamagedSidecar = { kind, id, path, error: err, modifiedAt };
    if (kind === 'snapshot') {
      const volumeId = await namedVolumeId(path);
      if (volumeId !== undefined) damaged.volumeId = volumeId;
    }
    return damaged;
  }

  private async listing<R extends { createdAt: string; id: string }>(
    names: readonly string[],
    read: (id: string) => Promise<OrDamaged<R>>,
  ): Promise<SidecarListing<R>> {
    const records: R[] = [];
    const damaged: DamagedSidecar[] = [];
    for (const id of sidecarIds(names)) {
      try {
        const found = await read(id);
        if (found.damaged) damaged.push(found.damaged);
        else records.push(found.record);
      } catch (err) {
        if (!(isCairnError(err) && err.code === 'NOT_FOUND')) throw err; // deleted meanwhile is fine
      }
    }
    return { records: records.sort(byCreation), damaged: damaged.sort((a, b) => byCreation({ createdAt: a.modifiedAt, id: a.id }, { createdAt: b.modifiedAt, id: b.id })) };
  }

  private async among<R extends { createdAt: string; id: string }>(names: readonly string[], read: (id: string) => Promise<R>): Promise<R[]> {
    const records: R[] = [];
    for (const id of sidecarIds(names)) {
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

/** The ids of the sidecars among `names` (a read of a kind's directory): `<id>.json`, `id` a UUID. */
function sidecarIds(names: readonly string[]): string[] {
  return names.filter((n) => n.endsWith('.json') && isUuid(n.slice(0, -5))).map((n) => n.slice(0, -5));
}

/**
 * The volume a damaged snapshot sidecar's bytes name: the `volumeId` of the JSON object it still
 * holds (a record of an unknown format, say), or else the one UUID that every `"volumeId": "…"`
 * in its text holds (a torn or bit-rotten record). Undefined when it names none, several, or
 * cannot be read (not a regular file, larger than any record, an I/O error).
 */
async function namedVolumeId(path: string): Promise<string | undefined> {
  let text: string;
  try {
    const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile() || st.size > MAX_HINT_BYTES) return undefined;
      text = (await fh.readFile()).toString('utf8');
    } finally {
      await fh.close().catch(() => {});
    }
  } catch {
    return undefined;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
      const volumeId = (parsed as { volumeId?: unknown }).volumeId;
      return isUuid(volumeId) ? volumeId : undefined;
    }
  } catch {
    // not JSON (any more): look at its text
  }
  const named = new Set<string>();
  for (const m of text.matchAll(VOLUME_ID_MEMBER)) named.add(m[1]!);
  const [only] = named;
  return named.size === 1 && isUuid(only) ? only : undefined;
}

/**
 * How a volume whose sidecar is damaged is shown (a driver's getVolume and listVolumes): status
 * `error`, no name or metadata (its record is unreadable), `size` (its image's, or 0 when that is
 * unknown too), created when its sidecar was last written. It can be deleted; anything that needs
 * its record (attach, snapshot, extend, checkpoints) fails `CORRUPT`.
 */
export function toDamagedVolume(d: DamagedSidecar, size: number | undefined): Volume {
  return { id: d.id, name: '', size: size ?? 0, status: 'error', createdAt: d.modifiedAt, metadata: {} };
}
