/**
 * What an NbdServer serves: one backend per named export. Errors thrown by a backend become
 * NBD error replies (CairnError CORRUPT → EIO, INVALID_INPUT → EINVAL, NOT_SUPPORTED → EINVAL,
 * UNAVAILABLE and anything else → EIO); the connection stays up.
 */

/** A run of a read result: bytes, or `{ zero: n }` for n bytes that read as zeros (sent as a hole). */
export type ReadRun = Buffer | { zero: number };

/** One block-status descriptor, relative to the queried offset (consecutive from it). */
export interface StatusDescriptor {
  length: number;
  /** Context-defined flags; for `base:allocation` 1 = hole, 2 = reads as zeros. */
  flags: number;
}

/** What the server passes a backend with each READ and BLOCK_STATUS. */
export interface BackendCallOptions {
  /**
   * Aborted once the client's connection closed, when no reply can reach it any more (not at the
   * client's FIN: requests sent before it are still answered). A backend may then end the call
   * at once, rejecting with `CANCELLED`, and drop what it holds for it; work shared with other
   * connections' calls must go on. One signal per connection, shared by its calls.
   */
  signal?: AbortSignal;
}

export interface NbdBackend {
  /** Size in bytes, fixed while served. */
  readonly size: number;
  /** Writes, zeroing and trim get EPERM. Default: true when `write` is absent. */
  readonly readOnly?: boolean;
  /**
   * Reads `[offset, offset+length)` (checked by the server to lie inside the export): one buffer
   * of exactly `length` bytes, or runs that cover exactly `length` bytes in order. Idempotent.
   * May reject with `CANCELLED` once `options.signal` is aborted.
   */
  read(offset: number, length: number, options?: BackendCallOptions): Promise<Buffer | ReadRun[]>;
  /** Writes `data` at `offset`; with `fua`, durable before resolving. Absent: export is read-only. */
  write?(offset: number, data: Buffer, options: { fua: boolean }): Promise<void>;
  /** Makes a range read as zeros; `mayTrim` false means keep it allocated. Absent: not offered. */
  writeZeroes?(offset: number, length: number, options: { fua: boolean; mayTrim: boolean }): Promise<void>;
  /** Discards a range (a hint). With NBD_CMD_FLAG_FUA the server calls `flush` after it, before replying. Absent: not offered. */
  trim?(offset: number, length: number): Promise<void>;
  /** Makes completed writes durable. Absent: flush is a no-op. */
  flush?(): Promise<void>;
  /**
   * Meta context names served besides `base:allocation` (for example `qemu:dirty-bitmap:b0`).
   * Their flags are bits whose set state is the one a client must not miss (dirty): with a
   * minimum block size > 1 the server reports a bit for a block when any part of it has the bit
   * (for `base:allocation`, only when every part has it). See `StatusChunkBuilder`.
   */
  readonly metaContexts?: readonly string[];
  /**
   * Status of `[offset, offset+length)` for `context` (`base:allocation` or one of `metaContexts`):
   * consecutive descriptors from `offset`, at least one, covering at most `length` bytes. Absent,
   * or returning undefined or no descriptor of positive length for `base:allocation`, reports
   * everything as allocated data (flags 0). For any other context that request gets EIO instead
   * (0 would claim a state, e.g. clean for a dirty bitmap), as it does when this is absent and
   * `metaContexts` names contexts. May reject with `CANCELLED` once `options.signal` is aborted.
   */
  blockStatus?(context: string, offset: number, length: number, options?: BackendCallOptions): Promise<StatusDescriptor[] | undefined>;
}

/** One named export of an NbdServer. */
export interface NbdExport {
  /** Export name clients ask for ('' is the default export). */
  name: string;
  backend: NbdBackend;
  /** Free text shown by `nbdinfo`. Default none. */
  description?: string;
}

/** Whether the export refuses writes. */
export function isReadOnly(backend: NbdBackend): boolean {
  return backend.readOnly ?? backend.write === undefined;
}
