import type { ByteRange } from './block-device.js';

export interface ObjectInfo {
  key: string;
  size: number;
  /** ISO time of the last write. */
  modifiedAt: string;
}

/**
 * Cancellation of one store call (capability `cancellable`). A store that declares it honours
 * `signal` on every call that takes one:
 * - aborted before the call: it rejects with `CANCELLED` and has no effect (nothing written,
 *   replaced or removed; for openWrite, no writer);
 * - aborted while it runs: it rejects with `CANCELLED` promptly, without waiting for the rest of
 *   the call; a step already handed to the system (a syscall in the kernel, a request on the wire)
 *   may have to finish first, but no further step starts. A call that cannot be stopped any more
 *   (its effect already published) may resolve instead;
 * - aborted after it settled: nothing (the outcome stands).
 * A write that rejects `CANCELLED` publishes nothing afterwards: once the store has observed the
 * abort it never makes the object appear (posix: no rename or link after it), and what it wrote
 * (temporary files, uploaded parts) is removed or left to sweepTemp. Readers never see a partial
 * object either way. Only an abort that comes after the store's last check (the publishing step
 * itself in flight) may still let the object appear, whole; the call then resolves or rejects
 * `CANCELLED`, so a caller that must know re-reads. Cleanup (ObjectPartWriter.abort, a delete
 * of what a cancelled operation left) takes no signal: it must run after a cancel.
 * Stores without the capability may ignore `signal`; callers then stop waiting instead
 * (util/until-aborted) and the call goes on.
 */
export interface CallOptions {
  signal?: AbortSignal;
}

export interface PutOptions extends CallOptions {
  /**
   * Fail with `ALREADY_EXISTS` instead of replacing an existing object (atomically).
   * `ALREADY_EXISTS` means exactly that `get` finds an object at the key (callers take it as
   * "already stored"); when the key's place holds something that is no object (a directory of
   * other keys, a foreign file a store cannot read as one), the put is `CONFLICT` instead.
   */
  ifAbsent?: boolean;
  /**
   * This write belongs to an operation that frees space (a backup's delete, a GC): the writes it
   * must make before it may delete anything (its lock object and the lock's refreshes, a catalog
   * record's `deleting` state, GC's index rewrites). The caller marks such writes explicitly;
   * every other write (a backup's) is unmarked. A store with a space reserve (capability
   * `spaceReserve`) that finds no room for a marked put gives up its reserve and tries the put
   * once more; an unmarked put never touches the reserve. Stores without the capability ignore
   * it. Applies to put only (openWrite's part writes never spend a reserve).
   */
  spendReserve?: boolean;
}

export interface ObjectStoreCapabilities {
  /** `put(…, {ifAbsent})` is atomic against concurrent writers (else best effort: head+put). */
  atomicIfAbsent: boolean;
  /** Implements getInto (ranged reads into caller memory). */
  readInto?: boolean;
  /** Implements openWrite (an object written in parts, published whole). */
  writeInParts?: boolean;
  /** Implements sweepTemp (removal of what writers that died left behind). */
  sweepsTemp?: boolean;
  /** Honours `signal` in the options of every call as CallOptions states (else ignores it). */
  cancellable?: boolean;
  /**
   * Keeps a space reserve (implements ensureReserve): room set aside on its file system that only
   * puts marked `spendReserve` may use, so that deleting backups and GC work on a full disk.
   */
  spaceReserve?: boolean;
}

/**
 * An object being written in parts (ObjectStore.openWrite). Nothing of it is visible until
 * commit, which publishes the parts' concatenation atomically and durably, exactly as put would
 * publish it; a writer that fails, is aborted or dies leaves no object (only, at worst, what the
 * store sweeps as a dead writer's leftovers).
 */
export interface ObjectPartWriter {
  /**
   * Appends `data` after the parts before it. Calls may be made before earlier ones resolve; the
   * parts land in call order. `data` is the caller's again once this resolves. A part the store
   * can write straight from memory (an aligned buffer, at an aligned offset, of whole aligned
   * blocks: util/direct-io) may bypass its caches. After a failure every later call fails too.
   * Once the writer's signal (openWrite's `options.signal`) aborts, appends and commit reject
   * `CANCELLED` (a failure like any other: nothing is published); abort() still works.
   */
  append(data: Uint8Array): Promise<void>;
  /**
   * Waits for the parts and publishes the object, with put's semantics and errors for `options`
   * (`ALREADY_EXISTS` with ifAbsent when the key is taken, leaving the existing object). Whether
   * it resolves or rejects, the writer is done and holds nothing.
   */
  commit(): Promise<void>;
  /** Discards what was written and releases the writer. Idempotent, and safe after a failure or a commit. */
  abort(): Promise<void>;
}

export interface GetIntoOptions extends CallOptions {
  /** The bytes are read once: caches may be bypassed (see getInto). */
  once?: boolean;
}

/**
 * The primitives under the chunked repository. Keys are `/`-separated segments of
 * `[A-Za-z0-9._-]` (no empty, `.` or `..` segment), at most 1024 bytes; anything else is
 * `INVALID_INPUT`. A put is atomic: readers see the old object or the whole new one, never a part.
 */
export interface ObjectStore {
  readonly name: string;
  readonly capabilities: ObjectStoreCapabilities;
  /**
   * Stores `data` under `key`. `ALREADY_EXISTS` with `ifAbsent` when present. Idempotent without
   * it. `options.signal`: see CallOptions (a put rejected `CANCELLED` leaves the previous object,
   * if any, or, only when the abort raced the publishing step itself, the whole new one).
   */
  put(key: string, data: Uint8Array, options?: PutOptions): Promise<void>;
  /**
   * Returns the object, or `range` of it. `NOT_FOUND` if absent; `INVALID_INPUT` if the range
   * leaves the object. Idempotent. `options.signal`: see CallOptions.
   */
  get(key: string, range?: ByteRange, options?: CallOptions): Promise<Buffer>;
  /**
   * Optional: reads `range` of the object into `into[0, range.length)`, with the errors of get.
   * Stores that can fill caller memory directly implement it (the restore path reads into
   * reused shared buffers instead of allocating one per read); callers fall back to get.
   * `options.once`: the caller reads these bytes once (a restore, a verify), so the store may
   * bypass its caches. When `into` is laid out for it (util/direct-io's directReadSpan: an
   * aligned buffer, `into` at the range offset's alignment, room around it), the store may then
   * also overwrite up to DIRECT_IO_ALIGN - 1 bytes of that buffer before and after `into`.
   * `options.signal` (CallOptions): once the call settles, cancelled or not, the store no longer
   * writes into `into`; until then it may (a read already in the kernel).
   */
  getInto?(key: string, range: ByteRange, into: Buffer, options?: GetIntoOptions): Promise<void>;
  /**
   * Optional (capability writeInParts): starts writing the object `key` in parts, for a writer
   * that makes a large object piece by piece and should not hold it whole (pack files). Keys are
   * checked here (`INVALID_INPUT`); `options.ifAbsent` applies at commit. `options.signal`
   * (CallOptions) covers the call and the writer's whole life: appends and commit reject
   * `CANCELLED` once it aborts, and commit never publishes after the store observed the abort.
   * Callers fall back to put.
   */
  openWrite?(key: string, options?: PutOptions): Promise<ObjectPartWriter>;
  /**
   * Optional (capability sweepsTemp): removes what writers that died left behind (temporary files
   * of puts and part writes that never finished) and that is older than `olderThanMs`; returns
   * how many it removed. Such leftovers are never objects: no get, head or list sees them. The
   * repository's GC calls it, past its grace period, under its exclusive lock.
   */
  sweepTemp?(olderThanMs: number): Promise<number>;
  /** Size and time of an object. `NOT_FOUND` if absent. `options.signal`: see CallOptions. */
  head(key: string, options?: CallOptions): Promise<ObjectInfo>;
  /**
   * Removes an object. Idempotent: absent keys succeed. `options.signal` (CallOptions): a delete
   * that rejects `CANCELLED` may or may not have removed the object (deleting is idempotent, so
   * callers retry). Cleanup after a cancel passes no signal.
   */
  delete(key: string, options?: CallOptions): Promise<void>;
  /**
   * Every object whose key starts with `prefix`, each exactly once, in no promised order.
   * `options.signal` (CallOptions): once it aborts, the iteration's next step rejects `CANCELLED`.
   */
  list(prefix: string, options?: CallOptions): AsyncIterable<ObjectInfo>;
  /**
   * Optional (capability spaceReserve): makes the store's space reserve when it is missing and
   * fits, best effort. Resolves true when a reserve is there afterwards, false when there is none
   * (disabled, no room for it, or the store cannot write); never rejects. The repository calls it
   * when it opens. The store gives the reserve up only for a put marked `spendReserve` that found
   * no room, and makes it again itself, best effort, after its deletes freed space.
   */
  ensureReserve?(): Promise<boolean>;
  /**
   * Optional (capability spaceReserve): true when the store is short of space: its reserve is
   * missing and cannot be made now (ensureReserve is tried first: given up, by this process or
   * another, and too little free to make it again; or its writes were refused, as by a quota), on
   * a file system that could hold it. False when the reserve is there or made now, disabled, or
   * too large ever to be made there. Never rejects. GC asks it once it holds its lock (whose writes
   * may have given the reserve up) and then skips its repacks: the room the reserve left goes to
   * the writes that free space, never to new packs.
   */
  shortOfSpace?(): Promise<boolean>;
  /** Releases connections. Idempotent. */
  close?(): Promise<void>;
}
