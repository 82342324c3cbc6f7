import { constants } from 'node:fs';
import { lstat, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import {
  CairnError,
  DIRECT_IO_ALIGN,
  alignedBuffer,
  assertObjectPrefix,
  directReadSpan,
  isNoHardLinks,
  isRetryable,
  makeDirectories,
  noSpaceErrno,
  openDirect,
  resolveRange,
  type ByteRange,
  type CallOptions,
  type GetIntoOptions,
  type ObjectPartWriter,
  type ObjectInfo,
  type ObjectStore,
  type ObjectStoreCapabilities,
  type PutOptions,
} from '@cairn/core';
import { DirectoryChain } from './directory-chain.js';
import { DIRECTORY_MODE, checkSignal, fsyncDir, linkIfAbsent, readDirect, readExactly, writeTempFile } from './durable-fs.js';
import { DRIVER, errnoOf, fsError, isAbsent, writeError } from './fs-errors.js';
import { assertStorableKey, keyToSegments } from './key-layout.js';
import { freedByUnlink, listObjects, statObject, tempFiles } from './list-walk.js';
import { assertObjectData } from './object-data.js';
import { parsePosixOptions, type PosixObjectStoreOptions } from './options.js';
import { PosixPartWriter } from './part-writer.js';
import { DEFAULT_RESERVE_BYTES, SpaceReserve } from './space-reserve.js';

/** Where a key's object goes: its directory (path, and segments below the store's directory) and its path. */
interface Place {
  dirSegments: string[];
  dir: string;
  final: string;
}

/** Aligned blocks for the last block of an O_DIRECT read that must not land in `into` (see readSpan), reused. */
const lastBlocks: Buffer[] = [];

/** Default age after which `sweepTemp()` removes a temporary file: one hour. */
export const DEFAULT_TEMP_AGE_MS = 60 * 60 * 1000;

/**
 * An ObjectStore over a directory (local disk or NFS), the embedded default backup target.
 * Layout and key mapping: see key-layout.ts and the README. Every put is atomic and durable
 * when it resolves (temporary file, fsync, rename or link, fsync of the directory); readers and
 * `list` never see a partial object. Safe to share one directory between processes and hosts.
 * Every file it creates is mode 0600 and every directory it makes 0700, whatever the umask
 * (FILE_MODE, DIRECTORY_MODE); it never changes the mode of what exists. Symbolic links to
 * directories inside it are followed by every call, listing and sweepTemp included (list-walk.ts).
 *
 * Cancellation (capability `cancellable`, ObjectStore's CallOptions): every call checks its
 * signal before it starts and between its steps (each read(2) or write(2) of at most 8 MiB,
 * fsync, and last the rename or link) and rejects `CANCELLED` at the first check after
 * the abort. A syscall already in the kernel cannot be interrupted (on a dead NFS server it waits
 * for the server, or for ever on a hard mount): the call settles when it returns. A put or part
 * write never renames or links after it observed the abort, and removes its temporary file: one
 * that rejects `CANCELLED` published nothing. Its last check comes just before the rename or link;
 * an abort after it is not looked at any more: the put publishes, fsyncs the directory and
 * resolves (the whole object, durable).
 *
 * Space reserve (capability `spaceReserve`, option `reserveBytes`; space-reserve.ts): a put marked
 * `spendReserve` that finds the file system full gives the reserve up and tries once more;
 * ensureReserve makes it (the repository calls it when it opens), and so do deletes that removed
 * an object, once the store was asked for a reserve, when it is missing and fits (after a creation
 * the file system refused for space, only once the store deleted the reserve's size since).
 * shortOfSpace says when it is missing and cannot be made (GC then skips its repacks).
 */
export class PosixObjectStore implements ObjectStore {
  readonly name = DRIVER;
  readonly capabilities: ObjectStoreCapabilities = { atomicIfAbsent: true, readInto: true, writeInParts: true, sweepsTemp: true, cancellable: true, spaceReserve: true };
  /** The absolute directory holding the objects. */
  readonly directory: string;
  private readonly createDirectory: boolean;
  /** The directories on the way to the keys, and which of them are known durable. */
  private readonly dirs: DirectoryChain;
  /** The space reserve in `directory` (space-reserve.ts). */
  private readonly reserve: SpaceReserve;

  /** Validates options without touching the disk (`INVALID_INPUT` naming the option). */
  constructor(options: PosixObjectStoreOptions) {
    const parsed = parsePosixOptions({ ...options });
    this.directory = resolve(parsed.directory);
    this.createDirectory = parsed.createDirectory ?? true;
    this.dirs = new DirectoryChain(this.directory);
    this.reserve = new SpaceReserve(this.directory, parsed.reserveBytes ?? DEFAULT_RESERVE_BYTES, () => this.dirs.checkRoot());
  }

  /**
   * Builds a store and checks its directory: created when missing and `createDirectory` is not
   * false, else `UNAVAILABLE` (details.option = `directory`). With `createDirectory` false the
   * directory found is pinned by its device and inode number: once its path leads elsewhere (the
   * mount went away, the directory was replaced), every write that would create a directory or
   * write directly in it (a key with no `/`, the space reserve) fails `UNAVAILABLE` and creates
   * nothing (DirectoryChain.pinRoot); so do deletes and sweepTemp (checked before they remove
   * anything), and every read whose answer would be "absent" (get, getInto and head of a key
   * with no object, delete of one, any listing when it ends) or that found its file on another
   * device than the pinned directory's: the disk under a mount gone says nothing about the
   * store's objects (`UNAVAILABLE`, details.directory, not `NOT_FOUND` or an empty listing).
   * Unless `createDirectory` is false,
   * it is durable when this resolves (core's makeDirectories with `durable`: the parent of every
   * directory created is fsynced, and so, once per process, is the parent of one found existing,
   * whose maker, say a concurrent open, may still be fsyncing it). `INVALID_INPUT` (details.option = `directory`)
   * when it is a file or a path through a file, or, to be created, a dangling symbolic link. A
   * directory that cannot be made is `UNAVAILABLE` (no permission, a read-only file system, a
   * place that takes no new directories such as /proc/<pid>: see core's makeDirectories), at
   * once, never retried.
   */
  static async open(options: PosixObjectStoreOptions): Promise<PosixObjectStore> {
    const store = new PosixObjectStore(options);
    await store.checkDirectory();
    return store;
  }

  private async checkDirectory(): Promise<void> {
    const details = { option: 'directory' };
    try {
      const st = await stat(this.directory, { bigint: true });
      if (!st.isDirectory()) {
        throw new CairnError('INVALID_INPUT', `option directory: ${this.directory} is not a directory`, { driver: DRIVER, details });
      }
      // A mount point: nothing is written unless its path still leads to this directory (pinRoot).
      if (!this.createDirectory) this.dirs.pinRoot(st);
    } catch (err) {
      if (!isAbsent(err)) throw fsError(err, `option directory: ${this.directory}`);
      if (errnoOf(err) === 'ENOTDIR') throw this.notADirectory(err);
      if (!this.createDirectory) {
        throw new CairnError('UNAVAILABLE', `option directory: ${this.directory} does not exist`, { driver: DRIVER, cause: err, details });
      }
    }
    // A directory that must not be created (a mount point) is not made or made durable here.
    if (!this.createDirectory) return;
    await makeDirectories(this.directory, { durable: true, driver: DRIVER, mode: DIRECTORY_MODE }).catch((e: unknown) => {
      // A file on the way (ENOTDIR), or at the place itself (EEXIST: a file made there meanwhile, a dangling link).
      const code = errnoOf(e);
      throw code === 'ENOTDIR' || code === 'EEXIST' ? this.notADirectory(e) : fsError(e, `creating ${this.directory}, or making it durable`);
    });
  }

  /**
   * `INVALID_INPUT` for a `directory` option that names no place for a directory: a file is there,
   * or on the way to it. Not posix's CONFLICT for ENOTDIR, which is about keys colliding.
   */
  private notADirectory(cause: unknown): CairnError {
    const message = `option directory: ${this.directory} is not a directory: a file (or a link to nothing) is there or on the way to it (${errnoOf(cause)})`;
    return new CairnError('INVALID_INPUT', message, { driver: DRIVER, cause, details: { option: 'directory' } });
  }

  /**
   * Atomic and durable when it resolves: the object and every directory on its way from the
   * store's directory. Without `ifAbsent`: replaces by rename (idempotent). With `ifAbsent`:
   * publishes by link(2), which fails when the key exists → `ALREADY_EXISTS`, atomically
   * against every other process and NFS client, and only once the existing object is durable
   * too. ENOSPC, and a directory of the store that vanished → `UNAVAILABLE`, leaving the
   * previous object (if any) and no temporary file. `CONFLICT` when the key collides with a
   * directory of other keys, and, with `ifAbsent`, when its path holds a foreign file that is no
   * object (a symbolic link, FIFO, socket: get and head say `NOT_FOUND`), which is left in place;
   * without `ifAbsent` such a file is replaced (a link, never its target). `options.signal`:
   * see the class comment. `options.spendReserve`: a put that failed for space (ENOSPC, EDQUOT)
   * before it published gives up the space reserve and is tried once more; the second try's
   * error, if any, is the put's. `data` that is no Uint8Array → `INVALID_INPUT` (details.argument
   * = `data`), before anything is made on disk.
   */
  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    assertStorableKey(key, DRIVER);
    assertObjectData(data, `put ${key}`);
    const attempt = { published: false };
    try {
      await this.putOnce(key, data, options, attempt);
    } catch (err) {
      if (!options.spendReserve || !this.reserve.enabled || attempt.published || !noSpaceErrno(err)) throw err;
      await this.reserve.release();
      await this.putOnce(key, data, options, { published: false });
    }
  }

  /** One try of put; `attempt.published` is set once the object is published (a retry then must not run). */
  private async putOnce(key: string, data: Uint8Array, options: PutOptions, attempt: { published: boolean }): Promise<void> {
    await this.writing(async () => {
      checkSignal(options.signal);
      const place = await this.placeOf(key);
      await this.publish(key, place, await writeTempFile(place.dir, data, options.signal, `put ${key}: writing its temporary file`), options, attempt);
    });
  }

  /** Makes the space reserve when it is missing and fits (ObjectStore.ensureReserve); never rejects. */
  async ensureReserve(): Promise<boolean> {
    return this.reserve.ensure();
  }

  /**
   * ObjectStore.shortOfSpace: true when the reserve is enabled, the file system is large enough
   * to hold it twice over, and it is missing and cannot be made now (ensureReserve: given up, by
   * this process or another, and less than twice its size free; or held back after the file system
   * refused its writes, as a quota does). False while another creator still holds the reserve's
   * marker and the reserve's size is still free (space-reserve.ts beingMade: it found room and is
   * making it; with less free the marker is a dead creator's, and hides nothing). Never rejects.
   */
  async shortOfSpace(): Promise<boolean> {
    if (await this.reserve.ensure()) return false;
    if (await this.reserve.beingMade()) return false;
    return this.reserve.possible();
  }

  /**
   * Writes `key` in parts (see ObjectPartWriter) into a temporary file of its directory; commit
   * publishes it as put does, with put's guarantees and errors. Parts in aligned memory at
   * aligned offsets are written with O_DIRECT where the file system allows. A writer that dies
   * leaves a temporary file, which no reader or listing sees and sweepTemp removes.
   * `options.signal` covers the writer's life (see PosixPartWriter).
   */
  async openWrite(key: string, options: PutOptions = {}): Promise<ObjectPartWriter> {
    return this.writing(async () => {
      checkSignal(options.signal);
      const place = await this.placeOf(key);
      return PosixPartWriter.create(key, place.dir, (temp) => this.writing(() => this.publish(key, place, temp, options)), options.signal);
    });
  }

  /**
   * Runs a step of a write. When it fails in a way a retry may fix (`UNAVAILABLE`: a directory
   * removed from under the store, a full disk, a failed fsync), the directories known durable
   * are forgotten, so that the retry checks (and recreates) them all again.
   */
  private async writing<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (err) {
      if (isRetryable(err)) this.dirs.forget();
      throw err;
    }
  }

  /**
   * The directory (created, and durable with every directory above it; `dirSegments` below the
   * store's directory) and path of `key`, which is validated here.
   */
  private async placeOf(key: string): Promise<Place> {
    assertStorableKey(key, DRIVER);
    const segments = keyToSegments(key);
    const dirSegments = segments.slice(0, -1);
    const dir = await this.dirs.ensure(dirSegments);
    return { dirSegments, dir, final: join(dir, segments[segments.length - 1]!) };
  }

  /**
   * Publishes the fsynced temporary file `temp` as `key` (put's semantics); on failure `temp` is
   * removed. Resolves once the object's entry, and every directory's on the way, is durable: the
   * directory is fsynced, and its parents again if it is not the one placeOf made durable.
   * `options.signal` is checked last just before the rename or link: aborted by then,
   * `CANCELLED`, `temp` removed, nothing published; once published, the put completes (the
   * directory's fsync) and resolves whatever the signal says.
   */
  private async publish(key: string, place: Place, temp: string, options: PutOptions, attempt?: { published: boolean }): Promise<void> {
    const { final } = place;
    try {
      checkSignal(options.signal); // the last check before publishing: never after an observed abort
      if (!options.ifAbsent) {
        await rename(temp, final);
      } else if (await linkIfAbsent(temp, final)) {
        await unlink(temp).catch(() => undefined); // a leftover second link is swept later; the object is whole
      } else {
        throw await this.linkRefusal(key, place);
      }
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      if (err instanceof CairnError) throw err;
      if (errnoOf(err) === 'ENOENT') {
        // The temporary file or the directory vanished before publishing (a sweep with too short
        // an age, or an outside removal): nothing was published; the put may be retried.
        throw new CairnError('UNAVAILABLE', `put ${key}: the temporary file vanished before it was published`, { driver: DRIVER, cause: err });
      }
      if (options.ifAbsent && isNoHardLinks(err)) {
        // link(2) of our own fresh file fails only where the file system has no hard links (vfat
        // says EPERM): only-if-absent puts cannot work on this directory at all, so no retry helps.
        throw new CairnError('NOT_SUPPORTED', `put ${key}: the file system of ${this.directory} has no hard links, which only-if-absent writes need (${errnoOf(err)}); put the repository on one that has (ext4, XFS, Btrfs, NFS)`, { driver: DRIVER, cause: err });
      }
      throw errnoOf(err) === 'EISDIR' || errnoOf(err) === 'ENOTEMPTY' || errnoOf(err) === 'EEXIST' ? this.collision(key, err) : writeError(err, `put ${key}`);
    }
    if (attempt) attempt.published = true;
    // Published: the abort is no longer looked at, so CANCELLED always means nothing was published.
    await this.dirs.sync(place.dirSegments).catch((err: unknown) => {
      throw writeError(err, `fsync of the directory of ${key}`);
    });
  }

  /**
   * The object, or `range` of it, read with positional reads of just that range from one open
   * file (a concurrent replace never mixes two versions). `NOT_FOUND` if absent (`UNAVAILABLE`
   * when the pinned directory is gone: see open); `INVALID_INPUT` if the range leaves the object. Idempotent. `options.signal`: checked before the open and
   * between reads of at most 8 MiB.
   */
  async get(key: string, range?: ByteRange, options: CallOptions = {}): Promise<Buffer> {
    return this.read(key, range, options.signal);
  }

  /**
   * get's range read into `into` (no intermediate buffer). Same errors as get. With `once`, and
   * `into` laid out for it (ObjectStore.getInto), the file is read with O_DIRECT: a restore's
   * packs then never fill the page cache (on this kind of VM, a 2 GiB restore spent 1.7–2.4 s in
   * the kernel filling it in some benchmark runs and 0.4–0.6 s in others; 0.4–0.5 s direct).
   */
  async getInto(key: string, range: ByteRange, into: Buffer, options: GetIntoOptions = {}): Promise<void> {
    if (into.length < range.length) throw new CairnError('INVALID_INPUT', `buffer of ${into.length} bytes for a range of ${range.length}`, { driver: DRIVER });
    await this.read(key, range, options.signal, into, options.once ? directReadSpan(into, range.offset, range.length) : undefined);
  }

  /**
   * get and getInto: reads `range` (default: all) of the object into `into` (default: a new
   * buffer); through `span` (directReadSpan of `into`) with O_DIRECT where the file system allows.
   */
  private async read(key: string, range: ByteRange | undefined, signal: AbortSignal | undefined, into?: Buffer, span?: Buffer): Promise<Buffer> {
    assertStorableKey(key, DRIVER);
    checkSignal(signal);
    let fh: FileHandle;
    let direct = false;
    try {
      // O_NONBLOCK: a foreign FIFO at the key's path would otherwise block open(2) until some
      // writer opened it, for ever; the fstat below then finds it no regular file. Regular files
      // ignore the flag.
      const flags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
      const directFh = span ? await openDirect(this.pathOf(key), flags) : undefined;
      direct = directFh !== undefined;
      fh = directFh ?? (await open(this.pathOf(key), flags));
    } catch (err) {
      // Objects are regular files: a symbolic link (ELOOP) or a Unix socket (ENXIO) is no
      // object, as in head and list.
      const code = errnoOf(err);
      throw isAbsent(err) || code === 'ELOOP' || code === 'ENXIO' ? await this.absent(key, err) : fsError(err, `get ${key}`);
    }
    try {
      const st = await fh.stat();
      await this.dirs.checkDevice(st.dev);
      if (!st.isFile()) throw await this.absent(key);
      const r = resolveRange(range, st.size, DRIVER);
      if (direct) {
        await this.readSpan(fh, key, r, into!, span!, signal);
        return into!.subarray(0, r.length);
      }
      return await readExactly(fh, r.offset, r.length, `object ${key}`, into ?? Buffer.allocUnsafe(r.length), signal);
    } catch (err) {
      throw fsError(err, `get ${key}`);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /**
   * The O_DIRECT read of `r` through `span` (directReadSpan of `into`, whole blocks around the
   * range). The span may reach past `into` on either side (getInto's contract hands that memory
   * over), but where `into` is longer than the range the span's last block would write over
   * `into` past the range: that block is then read into a block of its own and only the range's
   * part of it copied.
   */
  private async readSpan(fh: FileHandle, key: string, r: ByteRange, into: Buffer, span: Buffer, signal: AbortSignal | undefined): Promise<void> {
    const from = r.offset - (r.offset % DIRECT_IO_ALIGN);
    const end = r.offset + r.length;
    const spanEnd = span.byteOffset + span.length;
    const rangeEnd = into.byteOffset + r.length;
    if (into.length === r.length || spanEnd <= rangeEnd) {
      await readDirect(fh, span, from, end, `object ${key}`, signal);
      return;
    }
    // end is unaligned here (an aligned end makes the span end with the range).
    const last = end - (end % DIRECT_IO_ALIGN);
    if (last > from) await readDirect(fh, span.subarray(0, last - from), from, last, `object ${key}`, signal);
    checkSignal(signal);
    const block = lastBlocks.pop() ?? alignedBuffer(DIRECT_IO_ALIGN);
    try {
      await readDirect(fh, block, last, end, `object ${key}`);
      block.copy(span, last - from, 0, end - last);
    } finally {
      if (lastBlocks.length < 8) lastBlocks.push(block);
    }
  }

  /** Size and modification time from stat(2). `NOT_FOUND` if absent (`UNAVAILABLE` when the pinned directory is gone: see open). Idempotent. `options.signal`: checked before and after. */
  async head(key: string, options: CallOptions = {}): Promise<ObjectInfo> {
    assertStorableKey(key, DRIVER);
    checkSignal(options.signal);
    const found = await statObject(this.pathOf(key), key);
    checkSignal(options.signal);
    if (!found) throw await this.absent(key);
    await this.dirs.checkDevice(found.dev);
    return found.info;
  }

  /**
   * Removes the object and fsyncs its directory. Idempotent: an absent key succeeds (on a
   * read-only file system too, which refuses every unlink(2) with EROFS), and so does
   * a key whose directory vanishes (another process removed it, emptied) between the unlink and
   * the fsync: the object is gone either way, as when it was absent from the start. Directories
   * (shards included) are never removed here, so a concurrent put into them can not lose its
   * directory. `options.signal`: checked before the unlink (then nothing is removed) and before
   * the fsync (then the object is gone, perhaps not durably). Once the object was removed, the
   * space reserve is made again when it is missing and fits (best effort: never fails the delete).
   * With the directory pinned and gone (see open), `UNAVAILABLE`, before anything is removed, and
   * for an absent key too.
   */
  async delete(key: string, options: CallOptions = {}): Promise<void> {
    assertStorableKey(key, DRIVER);
    checkSignal(options.signal);
    const path = this.pathOf(key);
    // A delete is a write: nothing is removed from the disk under a mount gone (one stat(2), beside the unlink and fsync).
    await this.dirs.checkRoot();
    // What the unlink frees (space-reserve.ts), measured only while the reserve counts deletes.
    const freed = this.reserve.owes ? await lstat(path).then(freedByUnlink, () => 0) : 0;
    try {
      await unlink(path);
    } catch (err) {
      // A read-only file system says EROFS before it looks the name up, present or not: a key
      // that holds no object (nothing, or a directory: no object either) is deleted all the same
      // (idempotent), once the root is known to be the one pinned (see absent): checked again
      // after the unlink, since a mount gone between the check above and the unlink also makes
      // the key look absent.
      if (isAbsent(err) || errnoOf(err) === 'EISDIR' || (await this.holdsNoObject(path))) return this.dirs.checkRoot();
      throw fsError(err, `delete ${key}`);
    }
    checkSignal(options.signal);
    await fsyncDir(dirname(path)).catch((err: unknown) => {
      if (isAbsent(err)) return;
      throw fsError(err, `fsync after delete ${key}`);
    });
    await this.reserve.afterFree(freed);
  }

  /**
   * Every object under `prefix`, each once, in no promised order; temporary files never appear.
   * `options.signal`: checked before the walk and before each object is yielded. With the
   * directory pinned and gone (see open), `UNAVAILABLE` once the walk ends, and before an object
   * found on another device is yielded.
   */
  async *list(prefix: string, options: CallOptions = {}): AsyncIterable<ObjectInfo> {
    assertObjectPrefix(prefix, DRIVER);
    checkSignal(options.signal);
    for await (const info of listObjects(this.directory, prefix, (dev) => this.dirs.checkDevice(dev))) {
      checkSignal(options.signal);
      yield info;
    }
    // What the walk did not find is absent only if it walked the pinned directory's tree: a mount
    // gone before or during the walk leaves the (empty) disk under it. One stat(2) per listing.
    await this.dirs.checkRoot();
  }

  /**
   * Removes temporary files (left by crashed or killed writers) whose mtime is older than
   * `olderThanMs` (default one hour). Returns how many it removed. Idempotent. Safe while other
   * writers run, in any process or on any host, however long their puts and part writes take: a
   * live writer refreshes its file's mtime at least every TEMP_REFRESH_MS (temp-refresh.ts), so
   * `olderThanMs` need only exceed that by a margin for clock skew between hosts (the repository's
   * GC passes at least 15 minutes). With less, a live writer's file may go and its publish fails
   * with `UNAVAILABLE`. A file the file system refuses to remove (a directory made append-only or
   * read-only) does not stop the sweep: every other file is still removed, then it rejects with the
   * first refusal's error (`UNAVAILABLE` for EPERM/EACCES), `details` counting `removed` and `refused`.
   */
  async sweepTemp(olderThanMs = DEFAULT_TEMP_AGE_MS): Promise<number> {
    if (!Number.isFinite(olderThanMs) || olderThanMs < 0) {
      throw new CairnError('INVALID_INPUT', 'olderThanMs must be a non-negative number', { driver: DRIVER });
    }
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    let freed = 0;
    let refused = 0;
    let first: { err: unknown; path: string } | undefined;
    await this.dirs.checkRoot(); // removes files: nothing on the disk under a mount gone
    for await (const { path, mtimeMs, bytes, dev } of tempFiles(this.directory)) {
      await this.dirs.checkDevice(dev);
      // Whole milliseconds on both sides: Date.now() drops the fraction that mtimeMs keeps, so a
      // file written earlier in the current millisecond would otherwise look younger than 0 ms.
      if (Math.floor(mtimeMs) > cutoff) continue;
      try {
        await unlink(path);
        removed++;
        freed += bytes;
      } catch (err) {
        if (isAbsent(err)) continue;
        refused++;
        first ??= { err, path };
      }
    }
    if (first) {
      const message = `sweeping temporary files: ${refused} could not be removed, the first ${first.path}: ${(first.err as Error).message}`;
      throw new CairnError(fsError(first.err, '').code, message, { driver: DRIVER, cause: first.err, details: { removed, refused } });
    }
    if (removed > 0) await this.reserve.afterFree(freed);
    return removed;
  }

  /** True when nothing, or a directory, is at `path` (an lstat that fails otherwise: false). */
  private async holdsNoObject(path: string): Promise<boolean> {
    try {
      return (await lstat(path)).isDirectory();
    } catch (err) {
      return isAbsent(err);
    }
  }

  /** Nothing to release. Idempotent. */
  async close(): Promise<void> {}

  /** The absolute path that holds `key` (see key-layout.ts). The key must be validated. */
  pathOf(key: string): string {
    return join(this.directory, ...keyToSegments(key));
  }

  /**
   * Why link(2) found `final` taken: the object itself (`ALREADY_EXISTS`, which callers take as
   * "stored"), or something that is no object (`CONFLICT`, left in place): a directory of other
   * keys, or a foreign file (a symbolic link, FIFO, socket or device), which get, head and list
   * take for no object either. For an object the directory is fsynced first, as publish does: the
   * winner's link may not be durable yet (its own fsync may still be running). An occupant gone
   * by the time it is looked at (deleted meanwhile) was there when link(2) looked: `ALREADY_EXISTS`.
   */
  private async linkRefusal(key: string, place: Place): Promise<CairnError> {
    const st = await lstat(place.final).catch(() => undefined);
    if (st?.isDirectory()) return this.collision(key);
    if (st && !st.isFile()) return this.foreign(key);
    await this.dirs.sync(place.dirSegments).catch((err: unknown) => {
      throw writeError(err, `fsync of the directory of ${key}, which holds it already`);
    });
    return new CairnError('ALREADY_EXISTS', `object ${key} already exists`, { driver: DRIVER });
  }

  /** `CONFLICT` for a key whose path holds a foreign file that is no object (see linkRefusal). */
  private foreign(key: string): CairnError {
    const message = `the path of object ${key} holds something that is no object (a symbolic link, FIFO, socket or device); remove it, or put without ifAbsent to replace it`;
    return new CairnError('CONFLICT', message, { driver: DRIVER, details: { file: this.pathOf(key) } });
  }

  private collision(key: string, cause?: unknown): CairnError {
    return new CairnError('CONFLICT', `object ${key} collides with a directory of other keys`, { driver: DRIVER, cause });
  }

  /**
   * `NOT_FOUND` for a key that holds no object, once the root is known to be the directory pinned
   * (checkRoot): else `UNAVAILABLE`, since the disk under a mount gone says nothing about the
   * store's objects. A read that found its file needs no such check when the file is on the pinned
   * root's device (checkDevice).
   */
  private async absent(key: string, cause?: unknown): Promise<CairnError> {
    await this.dirs.checkRoot();
    return new CairnError('NOT_FOUND', `object ${key} not found`, { driver: DRIVER, cause });
  }
}
