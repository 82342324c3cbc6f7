import { quotedCut } from '@cairn/core';
import type { ByteReader } from './byte-reader.js';
import { MAX_OPTION_DATA, PayloadCursor, discardOptionData, encodeMessage, encodeOptionReply, encodeString32, readOption } from './handshake-codec.js';
import { isReadOnly, type NbdExport } from './nbd-backend.js';
import { SHOWN_NAME } from './nbd-string.js';
import {
  BASE_ALLOCATION,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  NBD_MAGIC,
  OPT,
  REP,
  REP_ERR,
  TF,
} from './protocol.js';

/** Block sizes the server advertises (NBD_INFO_BLOCK_SIZE). */
export interface ServerBlockSizes {
  min: number;
  preferred: number;
  max: number;
}

/** The outcome of a successful handshake. */
export interface ServerSession {
  export: NbdExport;
  flags: number;
  structured: boolean;
  /** Selected contexts: id → name. */
  contexts: Map<number, string>;
}

export interface ServerHandshakeContext {
  reader: ByteReader;
  send: (b: Buffer) => void;
  /**
   * Resolves once replies sent so far have drained below the socket's high-water mark (or the
   * socket is gone). Awaited before each option is read, so a client that sends options without
   * reading the replies makes the server wait instead of queueing replies without bound.
   */
  writable: () => Promise<void>;
  exports: ReadonlyMap<string, NbdExport>;
  blockSizes: ServerBlockSizes;
  /**
   * Checked before each option: when it returns a refusal, every option but NBD_OPT_ABORT is
   * answered with that error reply (proto.md: a server that will not serve a client errors its
   * options until it gives up), and NBD_OPT_EXPORT_NAME, which cannot be answered with an error,
   * ends the handshake (hard disconnect).
   */
  refusal: () => OptionRefusal | undefined;
  driver: string;
}

/** Why a server answers every option with an error: `type` is an NBD_REP_ERR_* value. */
export interface OptionRefusal {
  type: number;
  message: string;
}

/**
 * The options `serverHandshake` acts on; others get NBD_REP_ERR_UNSUP. NBD_OPT_ABORT with data is
 * acknowledged all the same (proto.md: "a server SHOULD ignore any data sent by the client").
 */
const HANDLED_OPTIONS: ReadonlySet<number> = new Set([
  OPT.EXPORT_NAME,
  OPT.ABORT,
  OPT.LIST,
  OPT.INFO,
  OPT.GO,
  OPT.STRUCTURED_REPLY,
  OPT.LIST_META_CONTEXT,
  OPT.SET_META_CONTEXT,
]);

/**
 * Most queries one NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT may carry. A well-formed
 * request with more is answered NBD_REP_ERR_TOO_BIG (proto.md: for LIST with queries the server "MAY
 * fail with NBD_REP_ERR_TOO_BIG if too many queries are requested"; SET "MAY return
 * NBD_REP_ERR_TOO_BIG if a request seeks to select too many contexts"); a malformed one is still
 * NBD_REP_ERR_INVALID (a syntactically invalid request "MUST" get it).
 */
export const MAX_META_QUERIES = 1024;

/** Every context an export offers, `base:allocation` first; the id of a context is its index + 1. */
export function offeredContexts(exp: NbdExport): string[] {
  return [BASE_ALLOCATION, ...(exp.backend.metaContexts ?? []).filter((c) => c !== BASE_ALLOCATION)];
}

/**
 * Transmission flags for an export, on a session that negotiated structured replies or not.
 * SEND_DF is offered exactly when structured replies were (proto.md: the server "MUST set this
 * transmission flag to 1 if the NBD_CMD_READ request supports the NBD_CMD_FLAG_DF flag, and MUST
 * leave this flag clear if structured replies have not been negotiated"); a READ with DF is
 * answered with one content chunk (RequestHandler). SEND_FAST_ZERO is never offered.
 */
export function transmissionFlags(exp: NbdExport, structured: boolean): number {
  const b = exp.backend;
  let f = TF.HAS_FLAGS;
  if (isReadOnly(b)) f |= TF.READ_ONLY;
  else {
    f |= TF.SEND_FLUSH;
    if (b.write) f |= TF.SEND_FUA;
    if (b.trim) f |= TF.SEND_TRIM;
    if (b.writeZeroes) f |= TF.SEND_WRITE_ZEROES;
  }
  if (structured) f |= TF.SEND_DF;
  return f;
}

/**
 * Runs the server side of the fixed newstyle handshake. Resolves with the session once the client
 * entered transmission (NBD_OPT_GO or NBD_OPT_EXPORT_NAME), or undefined when the client
 * aborted or must be dropped (unknown client flags, unknown export on EXPORT_NAME, EXPORT_NAME
 * while refused, EXPORT_NAME with data over `MAX_OPTION_DATA` or a name that is not an NBD string).
 * Other options whose export name or queries are not NBD strings (`stringViolation`) get
 * NBD_REP_ERR_INVALID and the session goes on.
 * Other options with data over `MAX_OPTION_DATA` (64 KiB) have it read and dropped unparsed and
 * get NBD_REP_ERR_TOO_BIG (NBD_REP_ERR_UNSUP if unknown, NBD_REP_ACK for NBD_OPT_ABORT).
 * Rejects with `CORRUPT` on a malformed option stream (bad magic, option data over
 * `MAX_DISCARDED_OPTION_DATA`, 32 MiB).
 */
export async function serverHandshake(ctx: ServerHandshakeContext): Promise<ServerSession | undefined> {
  const hello = Buffer.allocUnsafe(18);
  hello.writeBigUInt64BE(NBD_MAGIC, 0);
  hello.writeBigUInt64BE(IHAVEOPT, 8);
  hello.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  ctx.send(hello);
  const clientFlags = (await ctx.reader.read(4)).readUInt32BE(0);
  if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) return undefined;
  const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;
  let structured = false;
  let selected: { exportName: string; contexts: Map<number, string> } | undefined;

  for (;;) {
    await ctx.writable();
    const { option, data, oversize } = await readOption(ctx.reader, ctx.driver);
    // NBD_OPT_EXPORT_NAME cannot be answered with an error; no export name is that long anyway.
    if (oversize !== undefined && option === OPT.EXPORT_NAME) return undefined;
    if (oversize !== undefined) await discardOptionData(ctx.reader, oversize);
    const reply = (type: number, payload?: Buffer): void => ctx.send(encodeOptionReply(option, type, payload));
    // An error reply's message is a string: at most 4096 bytes (`encodeMessage`), whatever the
    // client's export name quoted in it.
    const fail = (type: number, why: string): void => reply(type, encodeMessage(why));
    const invalid = (why: string): void => fail(REP_ERR.INVALID, why);
    // proto.md: NBD_OPT_SET_META_CONTEXT "replaces all previously-set metadata contexts (including
    // when this command fails)": whatever its answer, nothing selected before survives it.
    if (option === OPT.SET_META_CONTEXT) selected = undefined;
    const refusal = option === OPT.ABORT ? undefined : ctx.refusal();
    if (refusal) {
      if (option === OPT.EXPORT_NAME) return undefined;
      fail(refusal.type, refusal.message);
      continue;
    }
    if (oversize !== undefined && option !== OPT.ABORT) {
      // proto.md: unknown options get NBD_REP_ERR_UNSUP whatever their data; known ones,
      // NBD_REP_ERR_TOO_BIG ("The request or the reply is too large to process"). Either way the
      // data was skipped and the session goes on ("MUST NOT fail to parse the next message").
      if (HANDLED_OPTIONS.has(option)) fail(REP_ERR.TOO_BIG, `option data of ${oversize} bytes is over ${MAX_OPTION_DATA}`);
      else fail(REP_ERR.UNSUP, `option ${option} is not supported`);
      continue;
    }
    switch (option) {
      case OPT.EXPORT_NAME: {
        // A name that is not an NBD string (not UTF-8, NUL, over 4096 bytes) names no export: it
        // is not decoded leniently, where U+FFFD could match an export the client never named.
        const name = new PayloadCursor(data).string();
        const exp = name === undefined ? undefined : ctx.exports.get(name);
        if (!exp) return undefined;
        const tail = Buffer.alloc(noZeroes ? 10 : 134);
        tail.writeBigUInt64BE(BigInt(exp.backend.size), 0);
        const flags = transmissionFlags(exp, structured);
        tail.writeUInt16BE(flags, 8);
        ctx.send(tail);
        return { export: exp, flags, structured, contexts: contextsFor(selected, exp.name) };
      }
      case OPT.ABORT:
        reply(REP.ACK);
        return undefined;
      case OPT.LIST:
        if (data.length !== 0) {
          invalid('NBD_OPT_LIST takes no data');
          break;
        }
        for (const name of ctx.exports.keys()) reply(REP.SERVER, encodeString32(name));
        reply(REP.ACK);
        break;
      case OPT.STRUCTURED_REPLY:
        if (data.length !== 0) invalid('NBD_OPT_STRUCTURED_REPLY takes no data');
        else {
          structured = true;
          reply(REP.ACK);
        }
        break;
      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT: {
        const set = option === OPT.SET_META_CONTEXT;
        if (set && !structured) {
          invalid('structured replies must be negotiated first');
          break;
        }
        const req = parseMetaRequest(data);
        if (typeof req === 'string') {
          invalid(`malformed meta context request: ${req}`);
          break;
        }
        if (req.queries.length > MAX_META_QUERIES) {
          fail(REP_ERR.TOO_BIG, `${req.queries.length} meta context queries are over ${MAX_META_QUERIES}`);
          break;
        }
        const exp = ctx.exports.get(req.exportName);
        if (!exp) {
          fail(REP_ERR.UNKNOWN, `no export ${quotedCut(req.exportName, SHOWN_NAME)}`);
          break;
        }
        const offered = offeredContexts(exp);
        const chosen = new Map<number, string>();
        offered.forEach((name, i) => {
          const match = set
            ? req.queries.includes(name)
            : req.queries.length === 0 || req.queries.some((q) => q === name || (q.endsWith(':') && name.startsWith(q)));
          if (match) chosen.set(i + 1, name);
        });
        for (const [id, name] of chosen) {
          const idBuf = Buffer.allocUnsafe(4);
          idBuf.writeUInt32BE(set ? id : 0, 0);
          reply(REP.META_CONTEXT, Buffer.concat([idBuf, Buffer.from(name, 'utf8')]));
        }
        if (set) selected = { exportName: req.exportName, contexts: chosen };
        reply(REP.ACK);
        break;
      }
      case OPT.INFO:
      case OPT.GO: {
        const req = parseInfoRequest(data);
        if (typeof req === 'string') {
          invalid(`malformed NBD_OPT_INFO/GO request: ${req}`);
          break;
        }
        const exp = ctx.exports.get(req.exportName);
        if (!exp) {
          fail(REP_ERR.UNKNOWN, `no export ${quotedCut(req.exportName, SHOWN_NAME)}`);
          break;
        }
        const flags = transmissionFlags(exp, structured);
        const info = Buffer.allocUnsafe(12);
        info.writeUInt16BE(INFO.EXPORT, 0);
        info.writeBigUInt64BE(BigInt(exp.backend.size), 2);
        info.writeUInt16BE(flags, 10);
        reply(REP.INFO, info);
        for (const type of new Set(req.infos)) {
          if (type === INFO.BLOCK_SIZE) {
            const bs = Buffer.allocUnsafe(14);
            bs.writeUInt16BE(INFO.BLOCK_SIZE, 0);
            bs.writeUInt32BE(ctx.blockSizes.min, 2);
            bs.writeUInt32BE(ctx.blockSizes.preferred, 6);
            bs.writeUInt32BE(ctx.blockSizes.max, 10);
            reply(REP.INFO, bs);
          } else if (type === INFO.NAME) {
            reply(REP.INFO, Buffer.concat([u16(INFO.NAME), Buffer.from(exp.name, 'utf8')]));
          } else if (type === INFO.DESCRIPTION && exp.description) {
            reply(REP.INFO, Buffer.concat([u16(INFO.DESCRIPTION), Buffer.from(exp.description, 'utf8')]));
          }
        }
        reply(REP.ACK);
        if (option === OPT.GO) return { export: exp, flags, structured, contexts: contextsFor(selected, exp.name) };
        break;
      }
      default:
        fail(REP_ERR.UNSUP, `option ${option} is not supported`);
    }
  }
}

function contextsFor(selected: { exportName: string; contexts: Map<number, string> } | undefined, exportName: string): Map<number, string> {
  return selected && selected.exportName === exportName ? selected.contexts : new Map();
}

function u16(v: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(v, 0);
  return b;
}

/**
 * Parses meta context option data; when it is malformed, why (the caller answers
 * NBD_REP_ERR_INVALID and the session goes on). Malformed includes an export name or query that is
 * not an NBD string (`stringViolation`: not UTF-8, NUL, over 4096 bytes). Any query count is
 * parsed: the data is at most `MAX_OPTION_DATA` bytes and each query takes at least 4, so the loop
 * is bounded by the data.
 */
function parseMetaRequest(data: Buffer): { exportName: string; queries: string[] } | string {
  const c = new PayloadCursor(data);
  const exportName = c.string32();
  if (exportName === undefined) return `export name ${c.problem}`;
  const count = c.u32();
  if (count === undefined) return 'no query count';
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    const q = c.string32();
    if (q === undefined) return `query ${i} ${c.problem}`;
    queries.push(q);
  }
  return c.remaining === 0 ? { exportName, queries } : `${c.remaining} bytes after the last query`;
}

/** Parses NBD_OPT_INFO/GO data; when it is malformed, why (as `parseMetaRequest`). */
function parseInfoRequest(data: Buffer): { exportName: string; infos: number[] } | string {
  const c = new PayloadCursor(data);
  const exportName = c.string32();
  if (exportName === undefined) return `export name ${c.problem}`;
  const count = c.u16();
  if (count === undefined) return 'no information request count';
  const infos: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = c.u16();
    if (t === undefined) return 'information requests run past the end of the data';
    infos.push(t);
  }
  return c.remaining === 0 ? { exportName, infos } : `${c.remaining} bytes after the information requests`;
}
