import { setMaxListeners } from 'node:events';
import type net from 'node:net';
import { CairnError } from '@cairn/core';
import { commandFlagRefusal } from './command-flags.js';
import { toNbdErrno } from './error-map.js';
import type { BackendCallOptions, NbdBackend, ReadRun, StatusDescriptor } from './nbd-backend.js';
import { isReadOnly } from './nbd-backend.js';
import {
  BASE_ALLOCATION,
  CMD,
  CMD_FLAG,
  NBD_ERR,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from './protocol.js';
import { MAX_STATUS_DESCRIPTORS } from './reply-bound.js';
import type { ServerSession } from './server-handshake.js';
import { safeMerge } from './status-blocks.js';
import { StatusChunkBuilder } from './status-chunk-builder.js';

/** A parsed transmission request. */
export interface NbdRequest {
  flags: number;
  type: number;
  /** The client's 8-byte cookie, echoed verbatim. */
  cookie: Buffer;
  offset: number;
  length: number;
  /** WRITE: the data. */
  payload?: Buffer;
  /**
   * WRITE above the maximum payload (and under `DOS_WRITE_LENGTH`): its payload bytes are read
   * and dropped as they arrive, never held, and the request is answered EINVAL (no `payload`).
   */
  discard?: boolean;
}

/** What a RequestHandler tells its connection about each request it was given. */
export interface RequestHooks {
  /** Once per request, after its reply was queued on the socket (or the connection was gone). */
  settled(req: NbdRequest): void;
  /**
   * Once per request, always asynchronously: after the last byte of its reply left the socket's
   * write buffer (handed to the kernel), or once the socket was destroyed or ended before that.
   * Until then the reply's buffers are held by this process.
   */
  flushed(req: NbdRequest): void;
  /**
   * A BLOCK_STATUS reply was built and is about to be written: `bytes` is its size, at most
   * `replyBound` of the request (reply-bound.ts).
   */
  sized(req: NbdRequest, bytes: number): void;
}

/** A request refused with an NBD error value. */
class Refusal {
  constructor(
    readonly errno: number,
    readonly message: string,
  ) {}
}

const ZEROES = Buffer.alloc(1024 * 1024);
/** Most bytes one BLOCK_STATUS chunk can describe: descriptor lengths are 32-bit. */
const MAX_DESCRIBED = 0xffffffff;

/**
 * Executes requests of one session against its backend and writes the replies (in completion
 * order; each reply is written in one synchronous burst so replies never interleave).
 * Checks: first the command flags (`commandFlagRefusal`: a flag unknown, not applicable to the
 * command or not negotiated → EINVAL; this includes NBD_CMD_FLAG_FAST_ZERO, never offered); then
 * READ/BLOCK_STATUS past the end → EINVAL, READ above the maximum payload → EINVAL,
 * WRITE/WRITE_ZEROES/TRIM past the end → ENOSPC, any write on a read-only export → EPERM, then
 * WRITE above the maximum payload (its payload discarded, `discard`) → EINVAL, unknown
 * command → EINVAL, BLOCK_STATUS without a selected context → EINVAL, BLOCK_STATUS for which the
 * backend gives no usable descriptor for a context other than
 * `base:allocation` (it cannot be reported as 0: see `blockStatus`) → EIO. Backend errors map
 * through `toNbdErrno`. READ and BLOCK_STATUS get the connection's signal, aborted (`CANCELLED`)
 * once the socket closed (see `BackendCallOptions`).
 */
export class RequestHandler {
  inFlight = 0;
  private readonly backend: NbdBackend;
  private idleWaiters: Array<() => void> = [];
  /** One options object for every call of this connection: nothing allocated per request. */
  private readonly callOptions: BackendCallOptions;

  constructor(
    private readonly socket: net.Socket,
    private readonly session: ServerSession,
    private readonly maxPayload: number,
    /** The minimum block size advertised (1: none); block status descriptors are multiples of it. */
    private readonly minBlockSize: number,
    private readonly hooks: RequestHooks,
  ) {
    this.backend = session.export.backend;
    const gone = new AbortController();
    // Each call waiting on the signal holds a listener, removed when it settles: at most a few per
    // request in flight, so no bound (the default of 10 would warn at 32 requests in flight).
    setMaxListeners(0, gone.signal);
    this.callOptions = Object.freeze({ signal: gone.signal });
    const abort = (): void => gone.abort(new CairnError('CANCELLED', 'client connection closed'));
    if (socket.destroyed) abort();
    else socket.once('close', abort);
  }

  handle(req: NbdRequest): void {
    this.inFlight++;
    void this.run(req).finally(() => {
      this.inFlight--;
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
      this.hooks.settled(req);
    });
  }

  /** Resolves once no request is being handled. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async run(req: NbdRequest): Promise<void> {
    try {
      const badFlags = commandFlagRefusal(req.type, req.flags, this.session.flags);
      if (badFlags) throw new Refusal(NBD_ERR.EINVAL, badFlags);
      switch (req.type) {
        case CMD.READ:
          return this.sendRead(req, await this.read(req));
        case CMD.BLOCK_STATUS:
          return this.sendStatus(req, await this.blockStatus(req));
        case CMD.WRITE:
          this.checkWritable(req);
          // proto.md: the server "SHOULD report an NBD_EINVAL error if the client's request ... is
          // larger than the advertised maximum block size".
          if (req.discard) throw new Refusal(NBD_ERR.EINVAL, `write of ${req.length} bytes exceeds ${this.maxPayload}`);
          await this.backend.write!(req.offset, req.payload!, { fua: (req.flags & CMD_FLAG.FUA) !== 0 });
          break;
        case CMD.WRITE_ZEROES:
          this.checkWritable(req);
          if (!this.backend.writeZeroes) throw new Refusal(NBD_ERR.EINVAL, 'WRITE_ZEROES is not offered');
          await this.backend.writeZeroes(req.offset, req.length, {
            fua: (req.flags & CMD_FLAG.FUA) !== 0,
            mayTrim: (req.flags & CMD_FLAG.NO_HOLE) === 0,
          });
          break;
        case CMD.TRIM:
          this.checkWritable(req);
          if (!this.backend.trim) throw new Refusal(NBD_ERR.EINVAL, 'TRIM is not offered');
          await this.backend.trim(req.offset, req.length);
          // proto.md: with NBD_CMD_FLAG_FUA the reply waits until what the command wrote persisted;
          // NbdBackend.trim takes no FUA, so the server flushes after it.
          if ((req.flags & CMD_FLAG.FUA) !== 0) await this.backend.flush?.();
          break;
        case CMD.FLUSH:
          await this.backend.flush?.();
          break;
        default:
          throw new Refusal(NBD_ERR.EINVAL, `unknown command ${req.type}`);
      }
      this.sendSimple(req, 0);
    } catch (err) {
      const refusal = err instanceof Refusal ? err : new Refusal(toNbdErrno(err), err instanceof Error ? err.message : String(err));
      this.sendError(req, refusal);
    }
  }

  private async read(req: NbdRequest): Promise<ReadRun[]> {
    if (req.offset + req.length > this.backend.size) throw new Refusal(NBD_ERR.EINVAL, 'read past the end of the export');
    if (req.length > this.maxPayload) throw new Refusal(NBD_ERR.EINVAL, `read of ${req.length} bytes exceeds ${this.maxPayload}`);
    if (req.length === 0) return [];
    const got = await this.backend.read(req.offset, req.length, this.callOptions);
    const runs = Buffer.isBuffer(got) ? [got] : got;
    let total = 0;
    for (const r of runs) total += Buffer.isBuffer(r) ? r.length : r.zero;
    if (total !== req.length) throw new Refusal(NBD_ERR.EIO, `backend returned ${total} of ${req.length} bytes`);
    return runs;
  }

  /**
   * The BLOCK_STATUS chunk payload (context id and descriptors, see `StatusChunkBuilder`) per
   * selected context, built as the backend answers: what a request holds meanwhile is these wire
   * bytes, never one object per descriptor. With a minimum block size `min` > 1 the descriptors
   * are whole blocks of `min` bytes counted from the request's offset (proto.md: the server "MUST
   * use descriptor lengths that are an integer multiple of any advertised minimum block size"),
   * each with the safe state of its parts (`safeMerge`: never a hole or zeros over data, never
   * clean over a dirty part). For the aligned requests proto.md asks of clients these are the
   * export's blocks. The described range is the request rounded up to whole blocks (proto.md:
   * without REQ_ONE "the final descriptor MAY extend beyond the original requested size"), or with
   * REQ_ONE rounded down ("MUST NOT be greater than the length of the request"), and never past
   * the end of the export (whose size is a multiple of `min`: NbdServer refuses others). Only a
   * request that broke the client's MUSTs (REQ_ONE for less than `min`) can leave no whole block:
   * it gets one descriptor for what it can describe. The backend is asked again from where it stopped until
   * its answer ends on a block boundary, so no block is described from part of it.
   * Each context gets at most MAX_STATUS_DESCRIPTORS descriptors (reply-bound.ts: the server MAY
   * describe less than asked): the backend's descriptors are taken up to that many in all (more
   * only while not even one block is covered, which needs at most `min` ≤ 65536 of them: each
   * covers a byte or more), a partial block after whole ones is left out, and the folded result is
   * cut to that many (one with REQ_ONE).
   */
  private async blockStatus(req: NbdRequest): Promise<Buffer[]> {
    if (!this.session.structured || this.session.contexts.size === 0) throw new Refusal(NBD_ERR.EINVAL, 'no meta context selected');
    if (req.length === 0 || req.offset + req.length > this.backend.size) throw new Refusal(NBD_ERR.EINVAL, 'block status past the end of the export');
    const one = (req.flags & CMD_FLAG.REQ_ONE) !== 0;
    const min = this.minBlockSize;
    const room = Math.min(this.backend.size - req.offset, MAX_DESCRIBED - (MAX_DESCRIBED % min));
    const rounded = one ? req.length - (req.length % min) : Math.ceil(req.length / min) * min;
    const wanted = Math.min(rounded || req.length, room);
    // Every descriptor written is a block or more (or the one partial block): never more than the blocks described.
    const most = one ? 1 : Math.min(MAX_STATUS_DESCRIPTORS, Math.ceil(wanted / min));
    const out: Buffer[] = [];
    for (const [id, name] of this.session.contexts) {
      const chunk = new StatusChunkBuilder(id, min, safeMerge(name), most);
      do {
        const left = wanted - chunk.covered;
        const n = await this.askBackend(name, req.offset + chunk.covered, left, chunk);
        // Nothing usable. For base:allocation status 0 (data) is always true (see NbdBackend); for
        // another context 0 is a claim (for a dirty bitmap: clean, so an incremental would skip
        // the data), which only the backend can make.
        if (n === 0 && name !== BASE_ALLOCATION) throw new Refusal(NBD_ERR.EIO, `backend gave no status for ${name} at ${req.offset + chunk.covered}`);
        if (n === 0) chunk.add(left, 0);
      } while (chunk.covered < wanted && chunk.covered % min !== 0 && (chunk.taken < MAX_STATUS_DESCRIPTORS || chunk.covered < min));
      out.push(chunk.finish());
    }
    return out;
  }

  /**
   * Asks the backend for the status of `length` bytes at `offset` and adds what it answered to
   * `chunk` (`takeDescriptors`); returns the bytes added. Its own call, so the backend's answer
   * is dropped when it returns: a suspended async function keeps every local it had, and
   * `blockStatus` awaits again (the next context, the rest of a block) before it finishes.
   */
  private async askBackend(name: string, offset: number, length: number, chunk: StatusChunkBuilder): Promise<number> {
    const got = await this.backend.blockStatus?.(name, offset, length, this.callOptions);
    return takeDescriptors(got ?? [], length, chunk, Math.max(1, MAX_STATUS_DESCRIPTORS - chunk.taken));
  }

  private checkWritable(req: NbdRequest): void {
    if (isReadOnly(this.backend)) throw new Refusal(NBD_ERR.EPERM, 'export is read-only');
    if (req.offset + req.length > this.backend.size) throw new Refusal(NBD_ERR.ENOSPC, 'write past the end of the export');
  }

  private sendSimple(req: NbdRequest, errno: number, data: Buffer[] = []): void {
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(errno, 4);
    req.cookie.copy(h, 8);
    this.writeAll(req, [h, ...data]);
  }

  private chunkHeader(cookie: Buffer, flags: number, type: number, length: number): Buffer {
    const h = Buffer.allocUnsafe(20);
    h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    cookie.copy(h, 8);
    h.writeUInt32BE(length, 16);
    return h;
  }

  private sendError(req: NbdRequest, r: Refusal): void {
    if (!this.session.structured) return this.sendSimple(req, r.errno);
    const msg = Buffer.from(r.message.slice(0, 200), 'utf8');
    const body = Buffer.allocUnsafe(6);
    body.writeUInt32BE(r.errno, 0);
    body.writeUInt16BE(msg.length, 4);
    this.writeAll(req, [this.chunkHeader(req.cookie, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, 6 + msg.length), body, msg]);
  }

  /**
   * Without structured replies: a simple reply with the data. With them: one chunk per run
   * (OFFSET_DATA or OFFSET_HOLE), or with NBD_CMD_FLAG_DF a single OFFSET_DATA chunk with the
   * zeros written out (proto.md: with DF "the server MUST send at most one content chunk" and, "if
   * the area being read contains both data and a hole, the server MUST use
   * NBD_REPLY_TYPE_OFFSET_DATA with the zeroes explicitly present"). DF never gets EOVERFLOW
   * ("MAY reject ... if the length is too large to send without fragmentation"): every READ
   * served is within the maximum payload (at most 32 MiB), which one chunk's 32-bit length holds,
   * and zeros are sent from a shared buffer, so the one chunk costs no more memory than the runs.
   */
  private sendRead(req: NbdRequest, runs: ReadRun[]): void {
    const whole = !this.session.structured || (req.flags & CMD_FLAG.DF) !== 0;
    if (whole) {
      const data: Buffer[] = [];
      for (const r of runs) {
        if (Buffer.isBuffer(r)) data.push(r);
        else for (let left = r.zero; left > 0; left -= ZEROES.length) data.push(ZEROES.subarray(0, Math.min(left, ZEROES.length)));
      }
      if (!this.session.structured) return this.sendSimple(req, 0, data);
      if (req.length === 0) return this.writeAll(req, [this.chunkHeader(req.cookie, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0)]);
      return this.writeAll(req, [this.chunkHeader(req.cookie, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, 8 + req.length), u64(req.offset), ...data]);
    }
    const parts: Buffer[] = [];
    const nonEmpty = runs.filter((r) => (Buffer.isBuffer(r) ? r.length : r.zero) > 0);
    let at = req.offset;
    nonEmpty.forEach((r, i) => {
      const flags = i === nonEmpty.length - 1 ? REPLY_FLAG_DONE : 0;
      const off = u64(at);
      if (Buffer.isBuffer(r)) {
        parts.push(this.chunkHeader(req.cookie, flags, REPLY_TYPE.OFFSET_DATA, 8 + r.length), off, r);
        at += r.length;
      } else {
        const hole = Buffer.allocUnsafe(4);
        hole.writeUInt32BE(r.zero, 0);
        parts.push(this.chunkHeader(req.cookie, flags, REPLY_TYPE.OFFSET_HOLE, 12), off, hole);
        at += r.zero;
      }
    });
    if (nonEmpty.length === 0) parts.push(this.chunkHeader(req.cookie, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0));
    this.writeAll(req, parts);
  }

  /** One BLOCK_STATUS chunk per payload (`blockStatus`), the last one DONE. */
  private sendStatus(req: NbdRequest, bodies: Buffer[]): void {
    let bytes = 0;
    for (const body of bodies) bytes += STRUCTURED_HEADER_SIZE + body.length;
    this.hooks.sized(req, bytes);
    const parts: Buffer[] = [];
    bodies.forEach((body, i) => {
      const flags = i === bodies.length - 1 ? REPLY_FLAG_DONE : 0;
      parts.push(this.chunkHeader(req.cookie, flags, REPLY_TYPE.BLOCK_STATUS, body.length), body);
    });
    this.writeAll(req, parts);
  }

  /** Writes one reply in a single burst; `hooks.flushed(req)` follows once it left the write buffer. */
  private writeAll(req: NbdRequest, parts: Buffer[]): void {
    const flushed = (): void => this.hooks.flushed(req);
    if (this.socket.destroyed || this.socket.writableEnded) return process.nextTick(flushed);
    this.socket.cork();
    // A write's callback runs once its bytes were handed to the kernel, or with an error once the
    // socket was destroyed; chunks leave in order, so the last part's callback covers the reply.
    parts.forEach((p, i) => (i === parts.length - 1 ? this.socket.write(p, flushed) : this.socket.write(p)));
    this.socket.uncork();
  }
}

/** `v` (a safe integer) as a big-endian 64-bit field. */
function u64(v: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(Math.floor(v / 0x100000000), 0);
  b.writeUInt32BE(v >>> 0, 4);
  return b;
}

/**
 * Adds to `into` the descriptors of `descs` with a positive length, cut to `limit` bytes and
 * `count` descriptors in all (lengths floored to whole bytes); returns the bytes they cover.
 */
function takeDescriptors(descs: readonly StatusDescriptor[], limit: number, into: StatusChunkBuilder, count: number): number {
  let sum = 0;
  let taken = 0;
  for (const d of descs) {
    if (sum >= limit || taken >= count) break;
    const length = Math.min(Math.floor(d.length), limit - sum);
    if (!(length > 0)) continue;
    into.add(length, d.flags);
    sum += length;
    taken++;
  }
  return sum;
}
