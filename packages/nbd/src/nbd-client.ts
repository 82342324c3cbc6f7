import { CairnError, assertRange, cutText, onDeadline, quotedCut } from '@cairn/core';
import { ClientConnection, type NbdAddress } from './connection.js';
import { isSoftDisconnect, listExportsOver, listMetaContextsOver, negotiate, type BlockSizes, type NegotiatedExport } from './client-handshake.js';
import { NBD_DRIVER, connectionLost } from './error-map.js';
import { InFlightWindow } from './in-flight-window.js';
import { SHOWN_NAME, assertNbdString, assertNbdStrings } from './nbd-string.js';
import { PerRequestBound, type HeldRequest } from './per-request-bound.js';
import { BASE_ALLOCATION, CMD, CMD_FLAG, NBD_ERR, TF } from './protocol.js';
import { encodeRequest, splitRange } from './request-frames.js';
import { ReplyParser, type NbdExtent, type PendingReply } from './reply-parser.js';

export type { NbdExtent } from './reply-parser.js';
export type { BlockSizes } from './client-handshake.js';

export type NbdConnectOptions = NbdAddress & {
  /** Export to open. Default `''` (the server's default export). */
  exportName?: string;
  /** Meta contexts to select with NBD_OPT_SET_META_CONTEXT. Default `['base:allocation']`. */
  metaContexts?: string[];
  /** Ask for structured replies. Default true; without them reads still work, block status does not. */
  structuredReplies?: boolean;
  /** Requests in flight at once on this connection; further calls wait. Default 16. */
  maxInFlight?: number;
  /** Longest range asked in one BLOCK_STATUS request. Default 1 GiB. */
  blockStatusChunk?: number;
  /**
   * Deadline in ms for connecting, and again for the handshake (greeting and option haggling).
   * Past it the connection is closed and the call fails with `UNAVAILABLE`. Default 30000.
   */
  connectTimeoutMs?: number;
  /**
   * Request timeout: two bounds, each of which closes the connection when exceeded and fails every
   * request on it with `UNAVAILABLE` (a late reply could not be matched any more).
   * - Progress: while any request is in flight, a byte must arrive from the server at least every
   *   this many ms, counted from the later of the last byte received and the sending of the oldest
   *   request still in flight. A transfer that keeps moving is never cut, however long a request
   *   takes in all: a large read on a slow link, or requests queued at the server behind others
   *   being answered.
   * - Per request, for every request in flight (not only the oldest): its clock starts at the
   *   latest of its own sending; the moment every request sent before it had been answered or had
   *   a chunk of its reply arrive (until then it may be queued behind them at the server); and the
   *   arrival of the latest chunk of its own (structured) reply. It must be answered, or get a
   *   further chunk, before a reply chunk (a simple reply, or any chunk of a structured one)
   *   arrives for a request sent this many ms or more after its clock started. So a request the
   *   server holds back while answering newer ones fails at the first chunk of a reply to such a
   *   newer request, whether or not older requests' replies are still arriving. What counts is how
   *   long the server had the request, with nothing of this client's ahead of it that had not
   *   begun its reply, without sending more of its reply before it answered a request sent later:
   *   replies out of order, a request waiting for earlier ones to be answered or to begin their
   *   replies, large replies to other requests, and a reply sent in chunks less than this many ms
   *   apart with replies to newer requests between them, never trip it. As long as the server
   *   sends chunks only of replies to requests sent less than this many ms after a request's clock
   *   started, only the progress bound applies to that request.
   * - Error chunks: only the first error chunk of a reply counts as a chunk of it above (they carry
   *   no data; proto.md: `ERROR` SHOULD appear once, an `ERROR_OFFSET` offset SHOULD NOT repeat).
   *   A later one restarts no clock, and when it arrives this many ms or more after the later of
   *   the request's sending and the latest other chunk of its reply, the connection fails. So a
   *   server can hold a reply open with error chunks for at most this long (every other chunk type
   *   can appear only a bounded number of times in a reply), while a reply with a few error chunks
   *   and then `DONE` completes with the first error.
   * - A WRITE is answered only once its whole payload arrived, so one payload (at most
   *   `maxPayload`) must reach the server within this time.
   * Both bounds run on a monotonic clock: a step of the wall clock neither trips nor delays them.
   * They are checked after the bytes already received were handled (core's onDeadline), as are
   * the connect, handshake and disconnect deadlines: after this process's event loop was held up,
   * an answer waiting in the socket counts.
   * Default 60000; 0 disables both bounds.
   */
  requestTimeoutMs?: number;
  /**
   * Longest `disconnect()` may take, waiting for requests in flight and then for the server to
   * close after NBD_CMD_DISC. Past it the connection is destroyed, requests still in flight fail,
   * and `disconnect()` fails, all with `UNAVAILABLE`. Default 30000; 0 disables.
   */
  disconnectTimeoutMs?: number;
  /** Name used in errors. Default `nbd`. */
  driver?: string;
};

/** Where `listExports` / `listMetaContexts` connect, with the deadline of `NbdConnectOptions.connectTimeoutMs`. */
export type NbdListAddress = NbdAddress & { connectTimeoutMs?: number };

interface Pending extends PendingReply, HeldRequest {
  /** `now()` of its sending or of the latest chunk of its reply that counted as progress (see `progressed`). */
  progressAt: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Milliseconds on a monotonic clock, for every deadline of the client (the wall clock may step). */
const now = (): number => performance.now();

/** Largest TRIM / WRITE_ZEROES length sent in one request (1 GiB); longer ranges are split. */
const MAX_NO_PAYLOAD_REQUEST = 1 << 30;

/**
 * An NBD client over one connection: fixed newstyle handshake, structured replies, meta contexts,
 * and pipelined requests matched by cookie inside a bounded window (`maxInFlight`). Every method
 * may be called concurrently. Errors are CairnErrors: NBD error replies map per `nbdErrorCode`,
 * a lost connection fails every request in flight (and every later one) with `UNAVAILABLE`, a
 * protocol violation by the server with `CORRUPT`, a server silent for `requestTimeoutMs` while
 * requests are in flight, or holding any request back that long while answering newer ones (see
 * `requestTimeoutMs`), with `UNAVAILABLE` (closing the connection). A failure of the connection is
 * final the moment it is found: nothing the server sent after the offending byte or reply is
 * parsed, even in the same socket read, and every request in flight fails with that one error.
 * Calls after `disconnect()` fail with `INVALID_INPUT`.
 */
export class NbdClient {
  readonly size: number;
  /** Transmission flags (TF.*). */
  readonly flags: number;
  readonly exportName: string;
  readonly structuredReplies: boolean;
  /** Selected meta contexts: name → server-assigned id. */
  readonly metaContexts: ReadonlyMap<string, number>;
  readonly blockSizes: BlockSizes;
  readonly driver: string;
  private readonly window: InFlightWindow;
  private readonly parser: ReplyParser;
  /** Requests on the wire by cookie; Map order is send order, so the first entry is the oldest. */
  private readonly pending = new Map<number, Pending>();
  /** The per-request bound of `requestTimeoutMs` over `pending`. */
  private readonly held = new PerRequestBound<Pending>();
  private readonly requestTimeoutMs: number;
  private readonly disconnectTimeoutMs: number;
  /** Cancels the check for `requestTimeoutMs` without progress, armed while requests are pending. */
  private cancelCheck: (() => void) | undefined;
  /** `now()` when the last bytes arrived from the server (0: none since the handshake). */
  private lastReceivedAt = 0;
  private nextCookie = 1;
  private readonly blockStatusChunk: number;
  private disconnecting: Promise<void> | undefined;
  /** Why the session is ending (see `endSession`): every later call fails with it. */
  private endReason: CairnError | undefined;

  private constructor(
    private readonly conn: ClientConnection,
    negotiated: NegotiatedExport,
    options: NbdConnectOptions,
  ) {
    this.size = negotiated.size;
    this.flags = negotiated.flags;
    this.exportName = negotiated.exportName;
    this.structuredReplies = negotiated.structuredReplies;
    this.metaContexts = negotiated.contexts;
    this.blockSizes = negotiated.blockSizes;
    this.driver = options.driver ?? NBD_DRIVER;
    this.window = new InFlightWindow(options.maxInFlight ?? 16);
    this.blockStatusChunk = options.blockStatusChunk ?? 1 << 30;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
    this.disconnectTimeoutMs = options.disconnectTimeoutMs ?? 30_000;
    const parser = (this.parser = new ReplyParser(
      (c) => this.pending.get(c),
      (c) => this.settle(c),
      (c, progress) => this.progressed(c, progress),
      this.driver,
      this.structuredReplies,
      new Set(this.metaContexts.values()),
    ));
    conn.onClosed((err) => this.failAll(err));
    conn.startTransmission((chunk) => {
      this.lastReceivedAt = now();
      parser.push(chunk);
    });
  }

  /**
   * Connects and negotiates. `UNAVAILABLE` if unreachable, `NOT_FOUND` for an unknown export,
   * `CORRUPT` for a non-NBD peer; `INVALID_INPUT`, before connecting, for a `maxInFlight` that is
   * not a positive integer, and for an `exportName` or a `metaContexts` entry that is not an NBD
   * string (`textViolation`: a lone surrogate, NUL, over 4096 bytes of UTF-8), naming the field
   * (`details.field`, e.g. `metaContexts[1]`). When the server refuses an option with an error reply (an unknown
   * export, NBD_REP_ERR_SHUTDOWN, …) the client ends the session with NBD_OPT_ABORT, as proto.md
   * asks, and then lets go of the connection (`ClientConnection.release`); only a protocol
   * violation or a timeout drops it outright.
   */
  static async connect(options: NbdConnectOptions): Promise<NbdClient> {
    const driver = options.driver ?? NBD_DRIVER;
    const maxInFlight = options.maxInFlight ?? 16;
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1) {
      throw new CairnError('INVALID_INPUT', `maxInFlight must be a positive integer, not ${maxInFlight}`, { driver });
    }
    const exportName = options.exportName ?? '';
    const metaContexts = options.metaContexts ?? [BASE_ALLOCATION];
    assertNbdString(exportName, 'exportName', driver);
    assertNbdStrings(metaContexts, 'metaContexts', driver);
    const timeout = options.connectTimeoutMs ?? 30_000;
    const conn = await ClientConnection.open(options, driver, timeout);
    try {
      const negotiated = await conn.within(timeout, 'handshake', () =>
        negotiate(conn.reader, (b) => conn.socket.write(b), {
          exportName,
          structuredReplies: options.structuredReplies ?? true,
          metaContexts,
          driver,
        }),
      );
      return new NbdClient(conn, negotiated, options);
    } catch (err) {
      // An option refused: NBD_OPT_ABORT was sent (a soft disconnect), so end gracefully.
      if (isSoftDisconnect(err)) conn.release();
      else conn.abort(err instanceof CairnError ? err : connectionLost(String(err), driver, err));
      throw err;
    }
  }

  /**
   * Export names the server lists (NBD_OPT_LIST). Connecting, and then the option exchange, each
   * get `connectTimeoutMs` (default 30000); past it the connection is closed and this fails with
   * `UNAVAILABLE`. Once it settles the connection is released (`ClientConnection.release`): what
   * the server sends later is dropped, and the socket is destroyed within 1 s if the server does
   * not hang up.
   */
  static async listExports(address: NbdListAddress, driver = NBD_DRIVER): Promise<string[]> {
    const timeout = address.connectTimeoutMs ?? 30_000;
    const conn = await ClientConnection.open(address, driver, timeout);
    try {
      return await conn.within(timeout, 'NBD_OPT_LIST', () => listExportsOver(conn.reader, (b) => conn.socket.write(b), driver));
    } finally {
      conn.release(); // the server need not hang up after NBD_OPT_ABORT: do not wait on it
    }
  }

  /**
   * Meta context names an export offers for `queries` (NBD_OPT_LIST_META_CONTEXT; all when empty).
   * Deadlines as for `listExports`. `INVALID_INPUT`, before connecting, for an `exportName` or a
   * query that is not an NBD string (as `connect`; `details.field` e.g. `queries[0]`).
   */
  static async listMetaContexts(address: NbdListAddress, exportName = '', queries: string[] = [], driver = NBD_DRIVER): Promise<string[]> {
    assertNbdString(exportName, 'exportName', driver);
    assertNbdStrings(queries, 'queries', driver);
    const timeout = address.connectTimeoutMs ?? 30_000;
    const conn = await ClientConnection.open(address, driver, timeout);
    try {
      return await conn.within(timeout, 'NBD_OPT_LIST_META_CONTEXT', () =>
        listMetaContextsOver(conn.reader, (b) => conn.socket.write(b), driver, exportName, queries),
      );
    } finally {
      conn.release(); // the server need not hang up after NBD_OPT_ABORT: do not wait on it
    }
  }

  get readOnly(): boolean {
    return (this.flags & TF.READ_ONLY) !== 0;
  }
  get canFlush(): boolean {
    return (this.flags & TF.SEND_FLUSH) !== 0;
  }
  get canFua(): boolean {
    return (this.flags & TF.SEND_FUA) !== 0;
  }
  get canTrim(): boolean {
    return (this.flags & TF.SEND_TRIM) !== 0;
  }
  get canWriteZeroes(): boolean {
    return (this.flags & TF.SEND_WRITE_ZEROES) !== 0;
  }
  /** Requests in flight now, and the most ever at once (never above `maxInFlight`). */
  get inFlight(): number {
    return this.window.inFlight;
  }
  get peakInFlight(): number {
    return this.window.peakInFlight;
  }
  /**
   * The part of the export requests can reach: `size` rounded down to a multiple of the minimum
   * block size. proto.md: every request's offset and length MUST be multiples of the minimum
   * block size and MUST NOT pass the end, so when a server advertises a size that is not such a
   * multiple (it SHOULD NOT; qemu-nbd 7.2 can), the tail past this cannot be read or written.
   */
  get addressableSize(): number {
    return this.size - (this.size % this.blockSizes.min);
  }
  /** Largest payload per request: the server's maximum block size, capped at 32 MiB. */
  get maxPayload(): number {
    return this.blockSizes.max;
  }

  /**
   * Reads `length` bytes at `offset` into `into` (or a new buffer), split at the maximum payload
   * and pipelined. Holes are zero-filled. `INVALID_INPUT` outside the export. Idempotent.
   * `NOT_SUPPORTED`, before anything is sent, for a read reaching past `addressableSize` (the
   * last `size % blockSizes.min` bytes of an export whose size is not a multiple of its minimum
   * block size, which no request may touch).
   */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.checkRange(offset, length);
    if (into && into.length < length) throw new CairnError('INVALID_INPUT', `read buffer of ${into.length} bytes is smaller than ${length}`, { driver: this.driver });
    const target = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    if (length === 0) return target;
    const min = this.blockSizes.min;
    if (offset + length > this.addressableSize) throw this.tailError('read', offset, length);
    if (offset % min !== 0 || length % min !== 0) {
      // Honour the minimum block size with an aligned bounce read (inside addressableSize, so
      // rounding the end up to a multiple of `min` never passes the end of the export).
      const start = offset - (offset % min);
      const end = Math.ceil((offset + length) / min) * min;
      const bounce = Buffer.allocUnsafe(end - start);
      await this.readPieces(start, bounce);
      bounce.copy(target, 0, offset - start, offset - start + length);
      return target;
    }
    await this.readPieces(offset, target);
    return target;
  }

  /** Fills `target` from `offset` in pieces of at most the maximum payload. */
  private readPieces(offset: number, target: Buffer): Promise<void> {
    return splitRange(offset, target.length, this.maxPayload, (o, n) =>
      this.submit(CMD.READ, 0, o, n, { target: target.subarray(o - offset, o - offset + n), what: 'read' }),
    );
  }

  /** Writes `data` at `offset` (with FUA when asked; a server without FUA gets a flush after). */
  async write(offset: number, data: Uint8Array, options: { fua?: boolean } = {}): Promise<void> {
    this.checkRange(offset, data.length);
    this.checkAligned(offset, data.length, 'write');
    const fua = options.fua === true && this.canFua ? CMD_FLAG.FUA : 0;
    await splitRange(offset, data.length, this.maxPayload, (o, n) =>
      this.submit(CMD.WRITE, fua, o, n, { payload: data.subarray(o - offset, o - offset + n), what: 'write' }),
    );
    if (options.fua && !fua && this.canFlush) await this.flush();
  }

  /**
   * Makes a range read as zeros. By default the server may punch holes (NBD_CMD_FLAG_NO_HOLE off);
   * `noHole: true` asks it to keep the range allocated. `NOT_SUPPORTED` without SEND_WRITE_ZEROES.
   */
  async writeZeroes(offset: number, length: number, options: { fua?: boolean; noHole?: boolean } = {}): Promise<void> {
    this.checkRange(offset, length);
    this.checkAligned(offset, length, 'write-zeroes');
    if (!this.canWriteZeroes) throw new CairnError('NOT_SUPPORTED', 'server does not support WRITE_ZEROES', { driver: this.driver });
    const flags = (options.fua && this.canFua ? CMD_FLAG.FUA : 0) | (options.noHole ? CMD_FLAG.NO_HOLE : 0);
    await splitRange(offset, length, this.noPayloadLimit(), (o, n) => this.submit(CMD.WRITE_ZEROES, flags, o, n, { what: 'write-zeroes' }));
  }

  /** Discards a range (contents become unspecified). `NOT_SUPPORTED` without SEND_TRIM. */
  async trim(offset: number, length: number, options: { fua?: boolean } = {}): Promise<void> {
    this.checkRange(offset, length);
    this.checkAligned(offset, length, 'trim');
    if (!this.canTrim) throw new CairnError('NOT_SUPPORTED', 'server does not support TRIM', { driver: this.driver });
    const flags = options.fua && this.canFua ? CMD_FLAG.FUA : 0;
    await splitRange(offset, length, this.noPayloadLimit(), (o, n) => this.submit(CMD.TRIM, flags, o, n, { what: 'trim' }));
  }

  /** Makes completed writes durable; a no-op when the server does not offer FLUSH. Idempotent. */
  async flush(): Promise<void> {
    this.checkOpen();
    if (this.canFlush) await this.submit(CMD.FLUSH, 0, 0, 0, { what: 'flush' });
  }

  /**
   * One BLOCK_STATUS request for `context` describing the range from `offset`, at most `length`
   * bytes, at most `blockStatusChunk`, never past `addressableSize`. The server may describe less
   * than asked; the result is non-empty and starts at `offset`. `NOT_SUPPORTED` when `context`
   * was not negotiated, and, before anything is sent, when `offset` lies in the last
   * `size % blockSizes.min` bytes (past `addressableSize`), which no request may touch.
   *
   * With a minimum block size > 1 the request is the range rounded out to whole blocks, clamped
   * to `addressableSize` (proto.md, "Block size constraints": the client "MUST ensure that *offset*
   * and *length* are integer multiples of any advertised minimum block size", and MUST NOT pass
   * the end), and the answer is trimmed back to `[offset, offset+length)`. A reply that does not
   * reach `offset` (possible only when the server breaks its own MUST to use descriptor lengths
   * that are multiples of the minimum block size) is `CORRUPT`.
   */
  async blockStatus(context: string, offset: number, length: number): Promise<NbdExtent[]> {
    this.checkRange(offset, length);
    const contextId = this.metaContexts.get(context);
    if (contextId === undefined) throw new CairnError('NOT_SUPPORTED', `meta context ${quotedCut(context, SHOWN_NAME)} was not negotiated`, { driver: this.driver });
    if (length === 0) return [];
    if (offset >= this.addressableSize) throw this.tailError(`block-status(${cutText(context, SHOWN_NAME)})`, offset, length);
    const min = this.blockSizes.min;
    const start = offset - (offset % min);
    const end = Math.min(Math.ceil((offset + length) / min) * min, this.addressableSize);
    const chunk = Math.max(min, this.blockStatusChunk - (this.blockStatusChunk % min));
    const what = `block-status(${cutText(context, SHOWN_NAME)})`;
    // A successful reply carries at least one descriptor for `contextId` (the parser fails the
    // connection otherwise), made absolute from `start` and trimmed to the request.
    const described = (await this.submit(CMD.BLOCK_STATUS, 0, start, Math.min(end - start, chunk), { contextId, what }))!;
    const stop = offset + length;
    const out: NbdExtent[] = [];
    for (const e of described) {
      const from = Math.max(e.offset, offset);
      const to = Math.min(e.offset + e.length, stop);
      if (to > from) out.push({ offset: from, length: to - from, flags: e.flags });
    }
    if (out.length === 0) {
      const last = described[described.length - 1]!;
      throw new CairnError(
        'CORRUPT',
        `${what} [${start}, +${end - start}): the server described only up to ${last.offset + last.length}, short of ${offset}, with descriptors that are not multiples of the minimum block size ${min} (proto.md: it MUST use such multiples)`,
        { driver: this.driver },
      );
    }
    return out;
  }

  /**
   * Every extent of `context` over `[offset, offset+length)`, looping BLOCK_STATUS (see
   * `blockStatus`); adjacent equal flags merged. `NOT_SUPPORTED`, before anything is sent, for a
   * range reaching past `addressableSize`: the status of the last `size % blockSizes.min` bytes
   * cannot be asked, and a map leaving them out would report them as nothing.
   */
  async mapExtents(context: string, offset = 0, length = this.size - offset): Promise<NbdExtent[]> {
    this.checkRange(offset, length);
    if (length > 0 && offset + length > this.addressableSize) throw this.tailError(`block-status(${cutText(context, SHOWN_NAME)})`, offset, length);
    const out: NbdExtent[] = [];
    const end = offset + length;
    for (let at = offset; at < end; ) {
      for (const e of await this.blockStatus(context, at, end - at)) {
        const last = out[out.length - 1];
        if (last && last.flags === e.flags && last.offset + last.length === e.offset) last.length += e.length;
        else out.push({ offset: e.offset, length: e.length, flags: e.flags });
        at = e.offset + e.length;
      }
    }
    return out;
  }

  /**
   * Waits for requests in flight, sends NBD_CMD_DISC and closes the connection. Idempotent.
   * Later calls fail with `INVALID_INPUT`. After `disconnectTimeoutMs` the connection is destroyed
   * and this fails with `UNAVAILABLE` (as do the requests still in flight).
   */
  disconnect(): Promise<void> {
    return this.endSession(new CairnError('INVALID_INPUT', 'client is disconnected', { driver: this.driver }));
  }

  /**
   * The soft disconnect behind `disconnect()`: requests not yet sent (and every later call) fail
   * with `reason`, those in flight are answered, then NBD_CMD_DISC. Idempotent: the first reason wins.
   */
  private endSession(reason: CairnError): Promise<void> {
    this.endReason ??= reason;
    this.disconnecting ??= (async () => {
      this.window.fail(reason);
      const closed = new Promise<void>((resolve) => this.conn.onClosed(() => resolve()));
      const orderly = (async (): Promise<void> => {
        await this.window.idle();
        if (this.conn.closed) return;
        this.conn.socket.end(encodeRequest(CMD.DISC, 0, 0, 0, 0));
        await closed;
      })();
      const ms = this.disconnectTimeoutMs;
      if (ms <= 0) return orderly;
      let cancelDeadline: (() => void) | undefined;
      // Replies and the server's hang-up already received when the deadline passes win
      // (onDeadline). The socket's 'close' comes only after onDeadline's check: a hang-up read by
      // then (readableEnded) is the end `orderly` waits for.
      const late = new Promise<true>((resolve) => {
        cancelDeadline = onDeadline(ms, () => {
          if (!this.conn.socket.readableEnded) resolve(true);
        });
      });
      try {
        if ((await Promise.race([orderly, late])) === true) {
          const err = connectionLost(`disconnect did not complete within ${ms} ms`, this.driver);
          this.conn.abort(err);
          throw err;
        }
      } finally {
        cancelDeadline?.();
      }
    })();
    return this.disconnecting;
  }

  private async submit(
    cmd: number,
    flags: number,
    offset: number,
    length: number,
    extra: { target?: Buffer; payload?: Uint8Array; contextId?: number; what: string },
  ): Promise<NbdExtent[] | undefined> {
    await this.window.acquire();
    try {
      if (this.conn.error) throw this.conn.error;
      const cookie = this.nextCookie++;
      if (this.nextCookie > 0xffffffff) this.nextCookie = 1;
      return await new Promise<NbdExtent[] | undefined>((resolve, reject) => {
        const at = now();
        const p: Pending = {
          cmd,
          offset,
          length,
          covered: 0,
          what: extra.what,
          resolve: () => resolve(p.extents),
          reject,
          sentAt: at,
          heldSince: at,
          progressAt: at,
          replying: false,
        };
        if (extra.target) p.target = extra.target;
        if (extra.contextId !== undefined) p.contextId = extra.contextId;
        this.pending.set(cookie, p);
        this.held.sent(p);
        this.watch();
        const head = encodeRequest(cmd, flags, cookie, offset, length);
        const socket = this.conn.socket;
        if (extra.payload) {
          socket.cork();
          socket.write(head);
          socket.write(extra.payload);
          socket.uncork();
        } else {
          socket.write(head);
        }
      });
    } finally {
      this.window.release();
    }
  }

  private settle(cookie: number): void {
    const p = this.pending.get(cookie)!;
    this.pending.delete(cookie);
    this.held.answered(p, now());
    this.complete(p);
    this.checkHeld(p);
  }

  /**
   * A chunk of the reply to `cookie` arrived, not the last, and it may have overtaken others. When
   * it is `progress`, that request is not held back. When it is not (an error chunk after the
   * first of its reply), it restarts no clock, and the connection fails with `UNAVAILABLE` if it
   * came `requestTimeoutMs` or more after the request's `progressAt` (see `requestTimeoutMs`).
   */
  private progressed(cookie: number, progress: boolean): void {
    const p = this.pending.get(cookie);
    if (!p) return;
    const at = now();
    if (progress) {
      p.progressAt = at;
      this.held.chunk(p, at);
    } else if (this.requestTimeoutMs > 0 && at - p.progressAt >= this.requestTimeoutMs) {
      const ms = Math.round(at - p.progressAt);
      return this.conn.abort(
        connectionLost(`the reply to a ${p.what} got only further error chunks for ${ms} ms (requestTimeoutMs ${this.requestTimeoutMs})`, this.driver),
      );
    }
    this.checkHeld(p);
  }

  /**
   * Settles a request. An ESHUTDOWN error (the server is shutting down) also ends the session:
   * proto.md, "If the client receives an ESHUTDOWN error it MUST initiate a soft disconnect" (and
   * "SHOULD wait until there are no inflight requests first"), so requests not yet sent and every
   * later call fail with `UNAVAILABLE`, those in flight are answered, then NBD_CMD_DISC is sent
   * (see `endSession`; a later `disconnect()` waits for the same).
   */
  private complete(p: Pending): void {
    if (p.error) p.reject(p.error);
    else p.resolve();
    if (p.error?.details?.nbdError === NBD_ERR.ESHUTDOWN) {
      const reason = new CairnError('UNAVAILABLE', `the server is shutting down (ESHUTDOWN to a ${p.what}): the client disconnected`, { driver: this.driver });
      this.endSession(reason).catch(() => undefined); // its failure is the connection's, seen by every request
    }
  }

  /**
   * The per-request bound of `requestTimeoutMs`: a chunk of the reply to `answering` (the last, or
   * another) has arrived; when it was sent `requestTimeoutMs` or more after the `heldSince` of a
   * request whose clock runs, the connection fails. Only the longest-held request needs checking:
   * its `heldSince` is the earliest. O(1).
   */
  private checkHeld(answering: Pending): void {
    if (this.requestTimeoutMs <= 0) return;
    const longest = this.held.longestHeld();
    if (!longest) return;
    const late = answering.sentAt - longest.heldSince;
    if (late < this.requestTimeoutMs) return;
    this.conn.abort(
      connectionLost(
        `no reply to a ${longest.what}, though the server sent a reply chunk to a request sent ${Math.round(late)} ms after its clock last started (it was sent, every request before it was answered or began its reply, or it got a chunk of its reply; requestTimeoutMs ${this.requestTimeoutMs})`,
        this.driver,
      ),
    );
  }

  /** Arms the request check unless it is armed or disabled. */
  private watch(): void {
    if (this.cancelCheck || this.requestTimeoutMs <= 0) return;
    this.arm(this.requestTimeoutMs);
  }

  /**
   * Checks `ms` from now, after the bytes received by then were handled (onDeadline: after this
   * process's event loop was held up, a reply waiting in the socket counts as progress). Unref'd:
   * a pending request keeps the socket, and so the process, alive anyway.
   */
  private arm(ms: number): void {
    this.cancelCheck = onDeadline(ms, () => this.checkTimeout(), { unref: true });
  }

  /**
   * Fails the connection when nothing arrived for `requestTimeoutMs` since the later of the last
   * byte received and the sending of the oldest pending request (see `requestTimeoutMs`); else
   * re-arms for the moment that would happen.
   */
  private checkTimeout(): void {
    this.cancelCheck = undefined;
    const oldest = this.pending.values().next().value;
    if (!oldest) return;
    const silent = now() - Math.max(this.lastReceivedAt, oldest.sentAt);
    if (silent < this.requestTimeoutMs) return this.arm(this.requestTimeoutMs - silent);
    this.conn.abort(connectionLost(`no reply bytes from the server for ${this.requestTimeoutMs} ms (${oldest.what} pending)`, this.driver));
  }

  /**
   * The connection failed (`conn.abort`, or the socket closed): final at once. Nothing more is
   * parsed, not even the rest of the socket read being parsed when a reply in it tripped a bound,
   * and every request in flight or waiting for the window fails with `err`.
   */
  private failAll(err: CairnError): void {
    this.parser.halt();
    this.cancelCheck?.();
    this.cancelCheck = undefined;
    this.window.fail(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.held.clear();
  }

  private noPayloadLimit(): number {
    const min = this.blockSizes.min;
    return MAX_NO_PAYLOAD_REQUEST - (MAX_NO_PAYLOAD_REQUEST % min);
  }

  private checkOpen(): void {
    if (this.endReason) throw new CairnError(this.endReason.code, this.endReason.message, { driver: this.driver });
    if (this.conn.closed) throw connectionLost('connection to the NBD server was lost', this.driver);
  }

  private checkRange(offset: number, length: number): void {
    this.checkOpen();
    assertRange(offset, length, this.size, this.driver);
  }

  /** `NOT_SUPPORTED` for `what` over a range reaching past `addressableSize` (see there). */
  private tailError(what: string, offset: number, length: number): CairnError {
    const min = this.blockSizes.min;
    return new CairnError(
      'NOT_SUPPORTED',
      `${what} [${offset}, +${length}) reaches the last ${this.size - this.addressableSize} bytes of the export, which no request can reach: its size ${this.size} is not a multiple of its minimum block size ${min} (proto.md: requests MUST be multiples of it and MUST NOT pass the end)`,
      { driver: this.driver, details: { size: this.size, minBlockSize: min, addressableSize: this.addressableSize } },
    );
  }

  private checkAligned(offset: number, length: number, what: string): void {
    const min = this.blockSizes.min;
    if (offset % min !== 0 || length % min !== 0) {
      throw new CairnError('INVALID_INPUT', `${what} [${offset}, +${length}) is not aligned to the export's minimum block size ${min}`, { driver: this.driver });
    }
  }
}
