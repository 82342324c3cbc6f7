import type { ByteRange } from './block-device.js';

export interface ObjectInfo {
  key: string;
  size: number;
  /** ISO time of the last write. */
  modifiedAt: string;
}

export interface PutOptions {
  /**
   * Fail with `ALREADY_EXISTS` instead of replacing an existing object (atomically).
   * `ALREADY_EXISTS` means exactly that `get` finds an object at the key (callers take it as
   * "already stored"); when the key's place holds something that is no object (a directory of
   * other keys, a foreign file a store cannot read as one), the put is `CONFLICT` instead.
   */
  ifAbsent?: boolean;
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

export interface GetIntoOptions {
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
  /** Stores `data` under `key`. `ALREADY_EXISTS` with `ifAbsent` when present. Idempotent without it. */
  put(key: string, data: Uint8Array, options?: PutOptions): Promise<void>;
  /**
   * Returns the object, or `range` of it. `NOT_FOUND` if absent; `INVALID_INPUT` if the range
   * leaves the object. Idempotent.
   */
  get(key: string, range?: ByteRange): Promise<Buffer>;
  /**
   * Optional: reads `range` of the object into `into[0, range.length)`, with the errors of get.
   * Stores that can fill caller memory directly implement it (the restore path reads into
   * reused shared buffers instead of allocating one per read); callers fall back to get.
   * `options.once`: the caller reads these bytes once (a restore, a verify), so the store may
   * bypass its caches. When `into` is laid out for it (util/direct-io's directReadSpan: an
   * aligned buffer, `into` at the range offset's alignment, room around it), the store may then
   * also overwrite up to DIRECT_IO_ALIGN - 1 bytes of that buffer before and after `into`.
   */
  getInto?(key: string, range: ByteRange, into: Buffer, options?: GetIntoOptions): Promise<void>;
  /**
   * Optional (capability writeInParts): starts writing the object `key` in parts, for a writer
   * that makes a large object piece by piece and should not hold it whole (pack files). Keys are
   * checked here (`INVALID_INPUT`); `options` apply at commit. Callers fall back to put.
   */
  openWrite?(key: string, options?: PutOptions): Promise<ObjectPartWriter>;
  /**
   * Optional (capability sweepsTemp): removes what writers that died left behind (temporary files
   * of puts and part writes that never finished) and that is older than `olderThanMs`; returns
   * how many it removed. Such leftovers are never objects: no get, head or list sees them. The
   * repository's GC calls it, past its grace period, under its exclusive lock.
   */
  sweepTemp?(olderThanMs: number): Promise<number>;
  /** Size and time of an object. `NOT_FOUND` if absent. */
  head(key: string): Promise<ObjectInfo>;
  /** Removes an object. Idempotent: absent keys succeed. */
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix`, each exactly once, in no promised order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Releases connections. Idempotent. */
  close?(): Promise<void>;
}
