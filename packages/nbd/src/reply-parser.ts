import type { CairnError } from '@cairn/core';
import { checkStatusReply, takeStatusChunk, type StatusRequest } from './block-status-chunk.js';
import { errorChunkError, errorChunkKeep } from './error-chunk.js';
import { nbdReplyError, protocolError } from './error-map.js';
import { addSpan, claimByte } from './read-coverage.js';
import {
  CMD,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  REPLY_TYPE_ERROR_BIT,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

export type { NbdExtent } from './block-status-chunk.js';

/** A request awaiting its reply, as the parser needs it (for BLOCK_STATUS, see `StatusRequest`). */
export interface PendingReply extends StatusRequest {
  /** READ: where the data lands (exactly `length` bytes). */
  target?: Buffer;
  /** Bytes of a READ covered by data and hole chunks so far. */
  covered: number;
  /** READ with structured replies: the spans its content chunks covered and its error offsets claimed so far (see `addSpan`); created by the parser. */
  spans?: number[];
  /** A structured chunk of its reply has arrived (then a simple reply to it is a violation); set by the parser. */
  chunked?: boolean;
  error?: CairnError;
  what: string;
}

/** Largest non-data chunk payload accepted (64 MiB); larger is a protocol violation. */
const MAX_CHUNK_BODY = 64 * 1024 * 1024;

const enum State {
  Header,
  SimpleData,
  DataOffset,
  Data,
  Body,
  /** The unbuffered rest of an error chunk (see `errorChunkKeep`). */
  Skip,
}

/**
 * The client's transmission-phase parser: a synchronous state machine fed with socket chunks.
 * Read payloads are copied once, straight from the socket chunk into the request's target; the
 * parser keeps no reference to pushed chunks. Any violation throws a `CORRUPT` CairnError, before
 * the reply it is in completes, and the caller must drop the connection. Violations include every
 * chunk proto.md forbids that would let a server go on sending chunks without ever ending a reply:
 * `NONE` without `DONE`, an `OFFSET_HOLE` of size 0, and a second `BLOCK_STATUS` chunk for one
 * context id (or one for an id not negotiated) in a reply; a structured chunk when structured
 * replies were not negotiated, or a simple reply after structured chunks to the same request or
 * (even an error) to a READ when they were; a malformed error chunk, or one whose message is
 * longer than 4096 bytes (see `errorChunkKeep`, `errorChunkError`); a content chunk of a READ
 * over the offset of an earlier `ERROR_OFFSET` chunk of its reply; and a successful BLOCK_STATUS
 * reply without a chunk for each negotiated context (see `checkStatusReply`). No error chunk is
 * buffered beyond 4110 bytes. Work per chunk is O(1) but for copying its payload, its descriptors
 * and the negotiated contexts (BLOCK_STATUS), and `addSpan` (out-of-order reads, error offsets).
 */
export class ReplyParser {
  private state = State.Header;
  private readonly header = Buffer.allocUnsafe(STRUCTURED_HEADER_SIZE);
  private headerHave = 0;
  private headerNeed = 4;
  private cookie = 0;
  private current: PendingReply | undefined;
  private chunkFlags = 0;
  private chunkType = 0;
  /** The current chunk counts as progress of its reply (see `progressed`). */
  private chunkProgress = true;
  /** Remaining bytes of the current payload section. */
  private remaining = 0;
  /** Bytes of the current error chunk after its buffered part, read and dropped (`State.Skip`). */
  private skip = 0;
  /** Where the next data byte lands inside `current.target`. */
  private dataPos = 0;
  private body: Buffer = Buffer.alloc(0);
  private bodyHave = 0;
  private halted = false;

  constructor(
    private readonly lookup: (cookie: number) => PendingReply | undefined,
    private readonly complete: (cookie: number) => void,
    /**
     * A structured reply chunk other than the last has been received whole for `cookie`. `progress`
     * is false for an error chunk after the first in its reply: it carries nothing new (proto.md:
     * `ERROR` SHOULD appear once, an `ERROR_OFFSET` offset SHOULD NOT repeat), while every other
     * chunk type can appear only a bounded number of times in a reply.
     */
    private readonly progressed: (cookie: number, progress: boolean) => void,
    private readonly driver: string,
    /** Whether structured replies were negotiated: without, a structured chunk is a violation; with, so is any simple reply to a READ. */
    private readonly structured: boolean,
    /** Ids of the negotiated meta contexts: a BLOCK_STATUS chunk for any other id is a violation, as is a successful BLOCK_STATUS reply without one for each. */
    private readonly contextIds: ReadonlySet<number>,
  ) {}

  /** Parses `chunk`, calling back as replies progress and complete; nothing once `halt` was called. */
  push(chunk: Buffer): void {
    let p = 0;
    const n = chunk.length;
    while (p < n && !this.halted) {
      switch (this.state) {
        case State.Header: {
          const take = Math.min(this.headerNeed - this.headerHave, n - p);
          chunk.copy(this.header, this.headerHave, p, p + take);
          this.headerHave += take;
          p += take;
          if (this.headerHave === this.headerNeed) this.onHeaderBytes();
          break;
        }
        case State.SimpleData:
        case State.Data: {
          const take = Math.min(this.remaining, n - p);
          chunk.copy(this.current!.target!, this.dataPos, p, p + take);
          this.dataPos += take;
          this.remaining -= take;
          p += take;
          if (this.remaining === 0) {
            if (this.state === State.SimpleData) this.finish();
            else this.chunkDone();
          }
          break;
        }
        case State.DataOffset:
        case State.Body: {
          const take = Math.min(this.body.length - this.bodyHave, n - p);
          chunk.copy(this.body, this.bodyHave, p, p + take);
          this.bodyHave += take;
          p += take;
          if (this.bodyHave === this.body.length) {
            if (this.state === State.DataOffset) this.onDataOffset();
            else this.onBody();
          }
          break;
        }
        case State.Skip: {
          const take = Math.min(this.skip, n - p);
          this.skip -= take;
          p += take;
          if (this.skip === 0) this.chunkDone();
          break;
        }
      }
    }
  }

  /**
   * Stops parsing for good: the rest of the chunk being pushed (when called from a callback) and
   * every later chunk are ignored, so no reply completes after the connection was declared failed.
   * Idempotent.
   */
  halt(): void {
    this.halted = true;
  }

  private onHeaderBytes(): void {
    if (this.headerNeed === 4) {
      const magic = this.header.readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) this.headerNeed = SIMPLE_REPLY_SIZE;
      else if (magic !== STRUCTURED_REPLY_MAGIC) throw protocolError(`bad reply magic 0x${magic.toString(16)}`, this.driver);
      else if (this.structured) this.headerNeed = STRUCTURED_HEADER_SIZE;
      else throw protocolError('structured reply chunk, though structured replies were not negotiated', this.driver);
      return;
    }
    this.headerHave = 0;
    this.headerNeed = 4;
    if (this.header.readUInt32BE(0) === SIMPLE_REPLY_MAGIC) this.onSimpleHeader();
    else this.onChunkHeader();
  }

  private request(hi: number, lo: number): PendingReply {
    this.cookie = hi * 0x100000000 + lo;
    const r = this.lookup(this.cookie);
    if (!r) throw protocolError(`reply for unknown cookie ${this.cookie}`, this.driver);
    return r;
  }

  private onSimpleHeader(): void {
    const errno = this.header.readUInt32BE(4);
    const r = (this.current = this.request(this.header.readUInt32BE(8), this.header.readUInt32BE(12)));
    if (r.chunked) throw protocolError(`simple reply to a ${r.what} whose structured reply had begun`, this.driver);
    // proto.md: with structured replies, a READ MUST NOT get a simple reply, not even an early error.
    if (this.structured && r.cmd === CMD.READ) throw protocolError(`simple reply to a read (error ${errno}), though structured replies were negotiated`, this.driver);
    if (errno !== 0) {
      r.error = nbdReplyError(errno, r.what, undefined, this.driver);
      return this.finish();
    }
    if (r.cmd === CMD.READ && r.length > 0) {
      this.state = State.SimpleData;
      this.remaining = r.length;
      this.dataPos = 0;
      r.covered = r.length;
      return;
    }
    if (r.cmd === CMD.READ) r.covered = r.length;
    this.finish();
  }

  private onChunkHeader(): void {
    this.chunkFlags = this.header.readUInt16BE(4);
    this.chunkType = this.header.readUInt16BE(6);
    const r = (this.current = this.request(this.header.readUInt32BE(8), this.header.readUInt32BE(12)));
    r.chunked = true;
    this.chunkProgress = true;
    this.skip = 0;
    const length = this.header.readUInt32BE(16);
    if (this.chunkType === REPLY_TYPE.NONE && length !== 0) throw protocolError(`NONE chunk with a payload of ${length} bytes`, this.driver);
    if (this.chunkType === REPLY_TYPE.OFFSET_DATA) {
      if (r.cmd !== CMD.READ || length < 9) throw protocolError(`bad OFFSET_DATA chunk (length ${length})`, this.driver);
      this.remaining = length - 8;
      return this.expectBody(8, State.DataOffset);
    }
    if (length > MAX_CHUNK_BODY) throw protocolError(`chunk of ${length} bytes`, this.driver);
    if ((this.chunkType & REPLY_TYPE_ERROR_BIT) !== 0) {
      const keep = errorChunkKeep(this.chunkType, length, this.driver);
      this.skip = length - keep;
      return this.expectBody(keep, State.Body);
    }
    if (length === 0) return this.onBody0();
    this.expectBody(length, State.Body);
  }

  private expectBody(length: number, state: State): void {
    this.body = Buffer.allocUnsafe(length);
    this.bodyHave = 0;
    this.state = state;
  }

  private onDataOffset(): void {
    const r = this.current!;
    const at = this.u64(this.body, 0);
    this.cover(r, at, this.remaining, 'OFFSET_DATA');
    this.dataPos = at - r.offset;
    this.state = State.Data;
  }

  /** proto.md: a NONE chunk MUST have the DONE flag (so it may appear once, as the final chunk). */
  private onBody0(): void {
    if (this.chunkType !== REPLY_TYPE.NONE) throw protocolError(`empty chunk of type ${this.chunkType}`, this.driver);
    if ((this.chunkFlags & REPLY_FLAG_DONE) === 0) throw protocolError('NONE chunk without the DONE flag', this.driver);
    this.chunkDone();
  }

  private onBody(): void {
    const r = this.current!;
    const b = this.body;
    switch (this.chunkType) {
      case REPLY_TYPE.OFFSET_HOLE: {
        if (r.cmd !== CMD.READ || b.length !== 12) throw protocolError('bad OFFSET_HOLE chunk', this.driver);
        const at = this.u64(b, 0);
        const len = b.readUInt32BE(8);
        if (len === 0) throw protocolError('OFFSET_HOLE chunk of size 0', this.driver);
        this.cover(r, at, len, 'OFFSET_HOLE');
        r.target!.fill(0, at - r.offset, at - r.offset + len);
        break;
      }
      case REPLY_TYPE.BLOCK_STATUS:
        takeStatusChunk(r, b, this.contextIds, this.driver);
        break;
      default: {
        // Error chunks: ERROR, ERROR_OFFSET, and unknown types with bit 15 set (which fail the request).
        if ((this.chunkType & REPLY_TYPE_ERROR_BIT) === 0) throw protocolError(`unknown chunk type ${this.chunkType}`, this.driver);
        const { error, offset } = errorChunkError(this.chunkType, r, b, this.driver);
        // proto.md: no content chunk after it may overlap its offset (see `cover`).
        if (offset !== undefined && r.cmd === CMD.READ) claimByte((r.spans ??= []), offset - r.offset);
        this.chunkProgress = r.error === undefined;
        r.error ??= error;
      }
    }
    if (this.skip > 0) this.state = State.Skip;
    else this.chunkDone();
  }

  private chunkDone(): void {
    this.state = State.Header;
    if ((this.chunkFlags & REPLY_FLAG_DONE) !== 0) this.finish();
    else this.progressed(this.cookie, this.chunkProgress);
  }

  /**
   * The reply is complete. CORRUPT when it claims success for a READ that its chunks did not cover
   * whole, or for a BLOCK_STATUS without a chunk for each negotiated context (see `checkStatusReply`).
   */
  private finish(): void {
    const r = this.current!;
    if (!r.error && r.cmd === CMD.READ && r.covered !== r.length) {
      throw protocolError(`read reply covered ${r.covered} of ${r.length} bytes`, this.driver);
    }
    if (!r.error && r.cmd === CMD.BLOCK_STATUS) checkStatusReply(r, this.contextIds, this.driver);
    this.state = State.Header;
    const cookie = this.cookie;
    this.current = undefined;
    this.complete(cookie);
  }

  /** Records a data or hole chunk of a READ; CORRUPT when it leaves the request, or overlaps an earlier content chunk or error offset. */
  private cover(r: PendingReply, at: number, length: number, what: string): void {
    if (at < r.offset || at + length > r.offset + r.length) throw protocolError(`${what} chunk outside the request`, this.driver);
    if (!addSpan((r.spans ??= []), at - r.offset, at - r.offset + length)) {
      throw protocolError(`${what} chunk overlaps an earlier content chunk or error offset`, this.driver);
    }
    r.covered += length;
  }

  private u64(b: Buffer, at: number): number {
    return b.readUInt32BE(at) * 0x100000000 + b.readUInt32BE(at + 4);
  }
}
