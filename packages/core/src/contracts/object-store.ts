import type { ByteRange } from './block-device.js';

export interface ObjectInfo {
  key: string;
  size: number;
  /** ISO time of the last write. */
  modifiedAt: string;
}

export interface PutOptions {
  /** Fail with `ALREADY_EXISTS` instead of replacing an existing object (atomically). */
  ifAbsent?: boolean;
}

export interface ObjectStoreCapabilities {
  /** `put(…, {ifAbsent})` is atomic against concurrent writers (else best effort: head+put). */
  atomicIfAbsent: boolean;
  /** Implements getInto (ranged reads into caller memory). */
  readInto?: boolean;
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
  /** Size and time of an object. `NOT_FOUND` if absent. */
  head(key: string): Promise<ObjectInfo>;
  /** Removes an object. Idempotent: absent keys succeed. */
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix`, each exactly once, in no promised order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Releases connections. Idempotent. */
  close?(): Promise<void>;
}
