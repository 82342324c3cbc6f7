/**
 * A BlockDevice is an attached volume or snapshot: a byte-addressable range of `size` bytes.
 * Offsets and lengths are in bytes. Every call on a closed device fails with `INVALID_INPUT`.
 */

export type AttachMode = 'ro' | 'rw';

/** A byte range `[offset, offset + length)`. */
export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * Which extents to list.
 * - `allocated`: ranges that may hold data. Anything outside them reads as zeros.
 * - `changed`: ranges written since checkpoint `since` (see ChangedBlockTracking).
 */
export type ExtentQuery = { kind: 'allocated' } | { kind: 'changed'; since: string };

export interface Extent extends ByteRange {
  /** True when the driver knows the range reads as zeros (allocated but zeroed). */
  zero?: boolean;
}

export interface BlockDevice {
  /** Size in bytes, fixed for the life of the attachment. */
  readonly size: number;
  /** Whether writes are refused. */
  readonly mode: AttachMode;
  /** Name of the driver that attached the device (its VolumeDriver's `name`), for errors about it. BaseBlockDevice sets it. */
  readonly driverName?: string;
  /**
   * The unit, in bytes, at which `extents` may round ranges outward (a power of two, ≥ 512).
   * Reported extents never miss a written byte and never stretch beyond this granularity.
   */
  readonly extentGranularity: number;

  /**
   * Reads `length` bytes at `offset` into a new buffer, or with `into` (at least `length` bytes)
   * into `into` itself: the bytes are in `into[0, length)` when the promise resolves, and the
   * Buffer returned is `into.subarray(0, length)` (the same memory at the same place, never a
   * copy; callers use `into`, and a consumer that gets other memory back fails with `INTERNAL`).
   * Fails with `INVALID_INPUT` when the range leaves the device or `into` is too small. Idempotent.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Writes `data` at `offset`. `INVALID_INPUT` outside the device or when read-only. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes `[offset, offset+length)` read as zeros, deallocating where the driver can. Same errors as write. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Makes every completed write durable. Idempotent. */
  flush(): Promise<void>;
  /**
   * Lists extents inside `range` (default: the whole device): integer offsets and lengths,
   * sorted, non-overlapping, merged. A consumer that gets a list breaking this fails with
   * `INTERNAL` naming the driver (checkExtents), never guesses what was meant.
   * `changed` fails with `NOT_SUPPORTED` when the driver has no changed-block tracking and with
   * `NOT_FOUND` when the checkpoint is unknown or no longer consistent — callers then fall back
   * to a full read, never to a guess.
   */
  extents(query: ExtentQuery, range?: ByteRange): Promise<Extent[]>;
  /** Releases the device's resources. Idempotent. Use VolumeDriver.detach in flows. */
  close(): Promise<void>;
}
