import type net from 'node:net';
import { CairnError } from '@cairn/core';
import { ByteBudget } from './byte-budget.js';
import { ByteReader } from './byte-reader.js';
import { connectionLost } from './error-map.js';
import type { NbdExport } from './nbd-backend.js';
import { CMD, DOS_WRITE_LENGTH, REQUEST_HEADER_SIZE, REQUEST_MAGIC } from './protocol.js';
import { replyBound } from './reply-bound.js';
import { serverHandshake, type OptionRefusal, type ServerBlockSizes, type ServerSession } from './server-handshake.js';
import { RequestHandler, type NbdRequest } from './server-requests.js';

export interface ServerConnectionOptions {
  exports: ReadonlyMap<string, NbdExport>;
  blockSizes: ServerBlockSizes;
  /** Requests handled at once before the connection stops reading. */
  maxInFlight: number;
  /**
   * Bytes of WRITE payloads held at once (being received, or waiting for the backend); see the
   * class comment.
   */
  maxWriteBytes: number;
  /**
   * Bytes of READ and BLOCK_STATUS replies held at once (being produced, or waiting in the
   * socket's write buffer); see the class comment.
   */
  maxReadBytes: number;
  handshakeTimeoutMs: number;
  /** Past the handshake: ms without traffic and without a request in flight before the socket is destroyed; 0 = never. See the class comment. */
  idleTimeoutMs: number;
  /** Asked before each option; see `ServerHandshakeContext.refusal`. */
  refusal: () => OptionRefusal | undefined;
  driver: string;
}

/** How long a client whose handshake failed may take to read the last reply before it is cut off. */
const REJECT_GRACE_MS = 1000;
/** How long the requests of a client that sent NBD_CMD_DISC or ended its side may take to be answered. */
const FINISH_TIMEOUT_MS = 30_000;
const NOTHING = Buffer.alloc(0);

/**
 * One client of an NbdServer: handshake, then a request parser feeding a RequestHandler.
 *
 * Flow control (what one client can make the server hold):
 * - Transmission: a new request is parsed only while fewer than `maxInFlight` are being handled
 *   and the socket's write buffer is below its high-water mark. Bytes that arrive meanwhile stay
 *   unparsed in `backlog` and the socket is paused, so the backlog is at most what one socket
 *   read brought; parsing resumes as requests finish or the socket drains.
 * - Write payloads: a WRITE's payload buffer is allocated (and its bytes read) only when the
 *   payloads held, from when their buffer is allocated until the backend call settles, stay within
 *   `maxWriteBytes` with it, or when no other payload is held (so one write of the maximum
 *   payload always proceeds). Until then the connection reads no further, as above. A connection
 *   therefore holds at most max(`maxWriteBytes`, maximum payload) of write payloads. A WRITE above
 *   the maximum payload but under `DOS_WRITE_LENGTH` (2^25) takes no budget: its payload is read
 *   and dropped as it arrives (nothing allocated) and it is answered EINVAL (proto.md: such a
 *   length "SHOULD NOT be considered a denial of service attack (even if the advertised maximum
 *   block size is smaller)", and the server "SHOULD report an NBD_EINVAL error").
 * - Read replies: a READ or BLOCK_STATUS is started only when the replies held, each counted
 *   from when its request starts until its reply's last byte left the socket's write buffer
 *   (handed to the kernel, so the client is reading), stay within `maxReadBytes` with it, or when
 *   no other is held (so one request always proceeds). Until then it waits parsed, nothing after
 *   it is parsed and the socket is paused; it starts as earlier replies flush. A request is
 *   charged `replyBound` (reply-bound.ts): a READ the length it asked for (0 above the maximum
 *   payload: answered EINVAL at once), a BLOCK_STATUS the largest reply it can get (descriptors
 *   are capped per context), lowered to the real size once its reply is built. A connection
 *   therefore holds at most max(`maxReadBytes`, maximum payload, one BLOCK_STATUS reply) of such
 *   replies, whatever `maxInFlight` is, and a client that reads no reply stalls its own requests
 *   only.
 * - Handshake: the next option is read only once earlier replies drained below the high-water
 *   mark; reading from the socket pauses meanwhile.
 * - A failed handshake (unknown client flags, bad option magic, NBD_OPT_ABORT, unknown export on
 *   NBD_OPT_EXPORT_NAME, timeout): the server ends its side, discards whatever the client still
 *   sends, and destroys the socket after `REJECT_GRACE_MS` unless the client hung up first.
 *
 * Ending (proto.md, NBD_CMD_DISC: the server "MUST handle all outstanding requests" before it
 * closes): after NBD_CMD_DISC, and likewise once the client ended its side of the connection
 * (FIN, with or without NBD_CMD_DISC before it; clients commonly shut their side down right after
 * it), every request the client sent before is answered, then the server ends its side and the
 * socket closes (destroyed after `FINISH_TIMEOUT_MS` if requests are still being handled). A
 * request cut off by the FIN is dropped unanswered. This needs the socket to stay writable after
 * the client's FIN: the net.Server must be created with `allowHalfOpen: true` (NbdServer is);
 * without it node ends the socket at the FIN and the replies still owed are lost.
 * A bad request magic, or a WRITE above the maximum payload of `DOS_WRITE_LENGTH` bytes or more
 * (proto.md: a peer "MAY initiate a hard disconnect" for a payload "large enough to be deemed a
 * denial of service attack"), drops the connection.
 *
 * Idle: past the handshake, once no byte was received or sent (or made progress leaving the
 * write buffer) for `idleTimeoutMs` (the socket's own inactivity timer), the socket is destroyed
 * unless a request is in flight: being handled by the backend, parsed and waiting for its budget,
 * or received and not parsed yet (the connection is at its limits). A request in flight re-arms
 * the timer instead, so it is never cut off however long the backend takes. A client that stops
 * in the middle of a request (part of its header or of a WRITE payload sent) is idle: the rest
 * is its to send.
 */
export class ServerConnection {
  private readonly reader = new ByteReader();
  private handler: RequestHandler | undefined;
  /** Selected meta contexts of the session (once past the handshake): BLOCK_STATUS sends one chunk each. */
  private contexts = 0;
  /** Bytes of the read budget each started READ or BLOCK_STATUS holds until its reply flushed. */
  private readonly replyHeld = new Map<NbdRequest, number>();
  private readonly header = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
  private headerHave = 0;
  /**
   * A parsed request not started yet: a READ waiting for the read budget, or a WRITE waiting for
   * the write budget (`payload` unset) or receiving its payload (into `payload`, or dropped when
   * `discard`).
   */
  private request: NbdRequest | undefined;
  private payloadHave = 0;
  /** WRITE payloads allocated and not yet settled by the handler. */
  private readonly writes: ByteBudget;
  /** READ and BLOCK_STATUS replies started and not yet flushed (see `replyHeld`). */
  private readonly reads: ByteBudget;
  /** Received transmission bytes not parsed yet (the connection was at its limit); at most one socket read. */
  private backlog: Buffer | undefined;
  private stopReading = false;
  /** Set once the handshake failed: incoming bytes are discarded until the socket closes. */
  private rejected = false;
  /** Set once drain has ended the socket: reading resumes only to see the client hang up. */
  private finishing = false;
  private ended = false;
  /** Set once the client ended its side (FIN): nothing more will arrive. */
  private clientEnded = false;
  private readonly endWaiters: Array<() => void> = [];
  private readonly drainWaiters: Array<() => void> = [];

  constructor(
    readonly socket: net.Socket,
    private readonly options: ServerConnectionOptions,
  ) {
    this.writes = new ByteBudget(options.maxWriteBytes);
    this.reads = new ByteBudget(options.maxReadBytes);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => undefined); // surfaces as 'close'
    socket.on('drain', () => this.onDrain());
    socket.on('end', () => this.onEnd());
    socket.on('close', () => this.onClose());
    void this.handshake();
  }

  /** Resolves once the socket closed. */
  closed(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => this.endWaiters.push(resolve));
  }

  /**
   * Stops taking requests, lets the ones being handled answer, then closes. After `timeoutMs`
   * the socket is destroyed regardless. Idempotent.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.stopReading = true;
    this.updateFlow();
    const timer = setTimeout(() => this.socket.destroy(), timeoutMs);
    try {
      // A backend call that never settles must not hold close() past the timeout.
      if (this.handler) await Promise.race([this.handler.idle(), this.closed()]);
      this.socket.end();
      // Keep reading (and ignoring) so the client's FIN is seen; a paused socket never closes.
      this.finishing = true;
      this.backlog = undefined;
      this.socket.resume();
      await this.closed();
    } finally {
      clearTimeout(timer);
    }
  }

  private async handshake(): Promise<void> {
    const { options } = this;
    const timer = setTimeout(() => this.socket.destroy(), options.handshakeTimeoutMs);
    let session: ServerSession | undefined;
    try {
      session = await serverHandshake({
        reader: this.reader,
        send: (b) => {
          if (!this.socket.write(b)) this.setFlow();
        },
        writable: () => this.writable(),
        exports: options.exports,
        blockSizes: options.blockSizes,
        refusal: options.refusal,
        driver: options.driver,
      });
    } catch {
      session = undefined;
    } finally {
      clearTimeout(timer);
    }
    if (!session) return this.reject();
    this.contexts = session.contexts.size;
    this.handler = new RequestHandler(this.socket, session, options.blockSizes.max, options.blockSizes.min, {
      settled: (req) => {
        if (req.type === CMD.WRITE && req.payload) this.writes.release(req.length);
        this.updateFlow();
      },
      flushed: (req) => {
        this.reads.release(this.replyHeld.get(req) ?? 0);
        this.replyHeld.delete(req);
        this.updateFlow();
      },
      sized: (req, bytes) => {
        const held = this.replyHeld.get(req) ?? 0;
        if (bytes >= held) return;
        this.reads.release(held - bytes);
        this.replyHeld.set(req, bytes);
        this.updateFlow();
      },
    });
    if (options.idleTimeoutMs > 0) {
      this.socket.on('timeout', () => this.onIdle());
      this.socket.setTimeout(options.idleTimeoutMs);
    }
    const rest = this.reader.drain();
    if (rest.length > 0) this.backlog = rest;
    this.updateFlow();
    this.finishIfEnded();
  }

  /** The socket's inactivity timer fired: drop the client unless a request is in flight (see "Idle" in the class comment). */
  private onIdle(): void {
    if (this.ended) return;
    const busy = this.handler!.inFlight > 0 || this.waitingForBudget() || this.backlog !== undefined;
    if (busy) this.socket.setTimeout(this.options.idleTimeoutMs); // look again after another period
    else this.socket.destroy();
  }

  /** Gives up on a client whose handshake failed (see the class comment). */
  private reject(): void {
    this.rejected = true;
    this.socket.end();
    this.setFlow(); // read (and discard) so the client's FIN is seen
    const timer = setTimeout(() => this.socket.destroy(), REJECT_GRACE_MS);
    void this.closed().then(() => clearTimeout(timer));
  }

  private onData(chunk: Buffer): void {
    if (this.rejected || this.stopReading || this.ended) return;
    if (!this.handler) {
      this.reader.push(chunk);
      return;
    }
    // Normally empty here: the socket is paused while a backlog waits.
    this.backlog = this.backlog ? Buffer.concat([this.backlog, chunk]) : chunk;
    this.parse();
  }

  /** Whether another request may be parsed (and started) now. */
  private mayTake(): boolean {
    return !this.ended && !this.stopReading && this.handler!.inFlight < this.options.maxInFlight && !this.socket.writableNeedDrain;
  }

  /**
   * Starts the pending request if its budget allows, then parses the backlog, while the
   * connection may take requests; keeps the unparsed rest.
   */
  private parse(): void {
    const chunk = this.backlog ?? NOTHING;
    let p = 0;
    while (this.mayTake()) {
      const req = this.request;
      if (req) {
        if (!this.admit(req)) break;
        if (req.type === CMD.WRITE && this.payloadHave < req.length) {
          if (p === chunk.length) break;
          const take = Math.min(req.length - this.payloadHave, chunk.length - p);
          if (req.payload) chunk.copy(req.payload, this.payloadHave, p, p + take); // else discarded
          this.payloadHave += take;
          p += take;
          continue;
        }
        this.dispatch(req);
        continue;
      }
      if (p === chunk.length) break;
      const take = Math.min(REQUEST_HEADER_SIZE - this.headerHave, chunk.length - p);
      chunk.copy(this.header, this.headerHave, p, p + take);
      this.headerHave += take;
      p += take;
      if (this.headerHave === REQUEST_HEADER_SIZE) {
        this.headerHave = 0;
        if (!this.onHeader()) return;
      }
    }
    this.backlog = p < chunk.length && !this.stopReading ? chunk.subarray(p) : undefined;
    this.setFlow();
    this.finishIfEnded();
  }

  /**
   * The client ended its side (see "Ending" in the class comment). During the handshake an option
   * not yet whole never will be, so the reader fails once what it holds is taken (the handshake
   * still completes from options already received).
   */
  private onEnd(): void {
    this.clientEnded = true;
    this.reader.fail(new CairnError('UNAVAILABLE', 'client ended its side of the connection', { driver: this.options.driver }));
    this.finishIfEnded();
  }

  /** Once the client ended its side and every request it sent was started: answer them, then close. */
  private finishIfEnded(): void {
    if (this.clientEnded && this.handler && !this.stopReading && !this.backlog && !this.waitingForBudget()) void this.drain(FINISH_TIMEOUT_MS);
  }

  /** Parses a request header; false when the connection was dropped. */
  private onHeader(): boolean {
    const h = this.header;
    if (h.readUInt32BE(0) !== REQUEST_MAGIC) return this.violation('bad request magic');
    const req: NbdRequest = {
      flags: h.readUInt16BE(4),
      type: h.readUInt16BE(6),
      cookie: Buffer.from(h.subarray(8, 16)),
      offset: h.readUInt32BE(16) * 0x100000000 + h.readUInt32BE(20),
      length: h.readUInt32BE(24),
    };
    if (req.type === CMD.WRITE && req.length > this.options.blockSizes.max) {
      if (req.length >= DOS_WRITE_LENGTH) return this.violation(`write payload of ${req.length} bytes`);
      req.discard = true; // read and dropped, answered EINVAL (see the class comment)
    }
    this.payloadHave = 0;
    this.request = req; // started by parse once its budget allows
    return true;
  }

  /**
   * Takes what `req` needs from its budget (class comment): a WRITE's payload buffer, a READ's
   * reply; other requests need nothing. False while it must wait.
   */
  private admit(req: NbdRequest): boolean {
    if (req.type === CMD.WRITE) {
      if (req.payload || req.discard) return true;
      if (!this.writes.tryTake(req.length)) return false;
      req.payload = Buffer.allocUnsafe(req.length);
      return true;
    }
    const { max, min } = this.options.blockSizes;
    const cost = replyBound(req, this.contexts, max, min);
    if (!this.reads.tryTake(cost)) return false;
    if (cost > 0) this.replyHeld.set(req, cost);
    return true;
  }

  private dispatch(req: NbdRequest): void {
    this.request = undefined;
    if (req.type === CMD.DISC) {
      void this.drain(FINISH_TIMEOUT_MS);
      return;
    }
    this.handler!.handle(req);
  }

  private violation(why: string): false {
    this.socket.destroy(connectionLost(`client protocol violation: ${why}`, this.options.driver));
    this.ended = true;
    return false;
  }

  /** A request finished, a reply flushed or the socket drained: start what waits, or resume reading. */
  private updateFlow(): void {
    if ((this.backlog || this.request) && this.handler && this.mayTake()) this.parse();
    else this.setFlow();
  }

  /** Whether the pending request waits for its budget (rather than for payload bytes). */
  private waitingForBudget(): boolean {
    return this.request !== undefined && !(this.request.type === CMD.WRITE && (this.request.payload || this.request.discard));
  }

  /** Pauses the socket while nothing more may be taken from it, resumes it otherwise. */
  private setFlow(): void {
    const busy = this.handler
      ? this.handler.inFlight >= this.options.maxInFlight || this.backlog !== undefined || this.waitingForBudget()
      : false;
    const pause = !this.finishing && !this.rejected && (this.stopReading || busy || this.socket.writableNeedDrain);
    if (pause && !this.socket.isPaused()) this.socket.pause();
    else if (!pause && this.socket.isPaused()) this.socket.resume();
  }

  /** Resolves once the write buffer is below its high-water mark, or the socket closed. */
  private writable(): Promise<void> {
    if (this.ended || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private onDrain(): void {
    for (const w of this.drainWaiters.splice(0)) w();
    this.updateFlow();
  }

  private onClose(): void {
    this.ended = true;
    this.backlog = undefined;
    this.reader.fail(new CairnError('UNAVAILABLE', 'client went away', { driver: this.options.driver }));
    for (const w of this.drainWaiters.splice(0)) w();
    for (const w of this.endWaiters.splice(0)) w();
  }
}
