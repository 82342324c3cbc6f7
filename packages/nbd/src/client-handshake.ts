import { CairnError, escapedCut, quotedCut } from '@cairn/core';
import { blockSizeViolation, type AdvertisedBlockSizes } from './advertised-block-sizes.js';
import type { ByteReader } from './byte-reader.js';
import { optionErrorCode, protocolError } from './error-map.js';
import { PayloadCursor, encodeOption, encodeString32, readOptionReply, type OptionReply } from './handshake-codec.js';
import { SHOWN_MESSAGE, SHOWN_NAME } from './nbd-string.js';
import {
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  MAX_PAYLOAD_CAP,
  NBD_MAGIC,
  OPT,
  REP,
  REP_ERR,
  REP_ERR_BIT,
} from './protocol.js';

/** Block size constraints of an export (NBD_INFO_BLOCK_SIZE), in bytes. */
export interface BlockSizes {
  /** Requests must be aligned to this. Default 1 when the server does not say. */
  min: number;
  /** Preferred request granularity. Default 4096. */
  preferred: number;
  /** Largest payload of one request, capped at 32 MiB. Default 32 MiB. */
  max: number;
}

export interface NegotiateOptions {
  exportName: string;
  structuredReplies: boolean;
  metaContexts: string[];
  driver: string;
}

/** What option haggling settled for the transmission phase. */
export interface NegotiatedExport {
  exportName: string;
  size: number;
  /** Transmission flags (TF.*). */
  flags: number;
  structuredReplies: boolean;
  /** Context name → id the server assigned (ids are not fixed across servers or sessions). */
  contexts: Map<string, number>;
  blockSizes: BlockSizes;
}

type Send = (b: Buffer) => void;

/** Reads the server greeting and answers with client flags; returns whether fixed newstyle is on. */
async function greet(reader: ByteReader, send: Send, driver: string): Promise<{ fixed: boolean; noZeroes: boolean }> {
  const hello = await reader.read(18);
  if (hello.readBigUInt64BE(0) !== NBD_MAGIC) throw protocolError('bad server magic (not an NBD server)', driver);
  if (hello.readBigUInt64BE(8) !== IHAVEOPT) {
    throw new CairnError('NOT_SUPPORTED', 'server uses oldstyle negotiation', { driver });
  }
  const flags = hello.readUInt16BE(16);
  const fixed = (flags & FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (flags & FLAG_NO_ZEROES) !== 0;
  const reply = Buffer.allocUnsafe(4);
  reply.writeUInt32BE((fixed ? FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_C_NO_ZEROES : 0), 0);
  send(reply);
  return { fixed, noZeroes };
}

/** Most non-final replies (NBD_REP_SERVER, NBD_REP_META_CONTEXT, NBD_REP_INFO, …) taken for one option. */
export const MAX_OPTION_REPLIES = 16 * 1024;
/** Most bytes (headers and payloads) of the non-final replies taken for one option: 4 MiB. */
export const MAX_OPTION_REPLY_BYTES = 4 * 1024 * 1024;

/**
 * Sends an option and reads replies until a final one; `onReply` sees the non-final ones.
 * A server may send any number of those before the final reply, and what they carry is kept
 * (export or context names), so the client bounds them: past `MAX_OPTION_REPLIES` replies or
 * `MAX_OPTION_REPLY_BYTES` bytes for one option it gives up with `CORRUPT` (and the caller drops
 * the connection), rather than buffering until `connectTimeoutMs`. Far above any real server:
 * an export list or a context list that large is not something a client can use.
 * NBD_REP_ERR_SHUTDOWN to any option ends the session at once with a soft disconnect (`giveUp`).
 */
async function haggle(reader: ByteReader, send: Send, driver: string, option: number, data: Buffer, onReply?: (r: OptionReply) => void): Promise<OptionReply> {
  send(encodeOption(option, data));
  let replies = 0;
  let bytes = 0;
  for (;;) {
    const r = await readOptionReply(reader, driver);
    if (r.option !== option) throw protocolError(`reply to option ${r.option} while ${option} was pending`, driver);
    if (r.type === REP_ERR.SHUTDOWN) throw giveUp(r, `option ${option}`, send, driver);
    if (r.type === REP.ACK || (r.type & REP_ERR_BIT) !== 0) return r;
    replies += 1;
    bytes += OPTION_REPLY_HEADER + r.data.length;
    if (replies > MAX_OPTION_REPLIES || bytes > MAX_OPTION_REPLY_BYTES) {
      throw protocolError(
        `server sent more than ${replies > MAX_OPTION_REPLIES ? `${MAX_OPTION_REPLIES} replies` : `${MAX_OPTION_REPLY_BYTES} bytes of replies`} to option ${option} without a final reply`,
        driver,
      );
    }
    onReply?.(r);
  }
}

/** Bytes of an option reply header (magic, option, type, length). */
const OPTION_REPLY_HEADER = 20;

/**
 * The client gives up on the session after the error reply `r`: it sends NBD_OPT_ABORT (a soft
 * disconnect) and returns the error to throw, with `details.optionReply` set to the reply type.
 * proto.md: a client that wants to end the session during option haggling "MUST use soft
 * disconnect" (a hard disconnect only on a violation of a MUST by the server or a failed TLS
 * negotiation), and "If the client receives NBD_REP_ERR_SHUTDOWN it MUST initiate a soft
 * disconnect". The caller lets go of the connection gracefully (`isSoftDisconnect`). The
 * server's message (up to 64 KiB) is shown cut to `SHOWN_MESSAGE` code points, its control,
 * separator and bidi characters escaped, unquoted (core's escapedCut).
 */
function giveUp(r: OptionReply, what: string, send: Send, driver: string): CairnError {
  send(encodeOption(OPT.ABORT));
  const message = r.data.length > 0 ? `: ${escapedCut(r.data.toString('utf8'), SHOWN_MESSAGE)}` : '';
  return new CairnError(optionErrorCode(r.type), `${what} refused by the server (reply ${r.type - REP_ERR_BIT})${message}`, {
    driver,
    details: { optionReply: r.type },
  });
}

/**
 * Whether `err` ended a handshake with NBD_OPT_ABORT already sent (an option error reply, see
 * `giveUp`): the connection is to be released (FIN, then closed once the server hangs up), not
 * destroyed.
 */
export function isSoftDisconnect(err: unknown): boolean {
  return err instanceof CairnError && typeof err.details?.optionReply === 'number';
}

function exportNameData(name: string): Buffer {
  return encodeString32(name);
}

/** Runs the fixed newstyle handshake through NBD_OPT_GO (or EXPORT_NAME as a fallback). */
export async function negotiate(reader: ByteReader, send: Send, opts: NegotiateOptions): Promise<NegotiatedExport> {
  const { driver } = opts;
  const { fixed, noZeroes } = await greet(reader, send, driver);
  const result: NegotiatedExport = {
    exportName: opts.exportName,
    size: 0,
    flags: 0,
    structuredReplies: false,
    contexts: new Map(),
    blockSizes: { min: 1, preferred: 4096, max: MAX_PAYLOAD_CAP },
  };
  if (fixed && opts.structuredReplies) {
    const r = await haggle(reader, send, driver, OPT.STRUCTURED_REPLY, Buffer.alloc(0));
    result.structuredReplies = r.type === REP.ACK;
  }
  if (fixed && result.structuredReplies && opts.metaContexts.length > 0) {
    await setMetaContexts(reader, send, opts, result.contexts);
  }
  if (fixed) {
    const done = await go(reader, send, opts, result);
    if (done) return result;
  }
  // NBD_OPT_EXPORT_NAME: the server either answers with size and flags or hangs up.
  send(encodeOption(OPT.EXPORT_NAME, Buffer.from(opts.exportName, 'utf8')));
  const info = await reader.read(noZeroes ? 10 : 134).catch((err: unknown) => {
    throw new CairnError('NOT_FOUND', `export ${quotedCut(opts.exportName, SHOWN_NAME)} refused (server closed the connection)`, { driver, cause: err });
  });
  result.size = readSize(info, 0, driver);
  result.flags = info.readUInt16BE(8);
  return result;
}

/**
 * The id and name of an NBD_REP_META_CONTEXT payload (32-bit id, then the name). `CORRUPT` when the
 * payload is shorter than the id or the name is not an NBD string (`stringViolation`: over 4096
 * bytes, not valid UTF-8 — proto.md: it "MUST be valid UTF-8 data" — or containing NUL): decoding
 * such a name would turn the bad bytes into U+FFFD, so the context matched or listed would not be
 * the one the server named. The caller drops the connection (proto.md: a client that "detects a
 * violation of a mandatory condition" MAY initiate a hard disconnect), as for the other malformed
 * replies.
 */
function parseMetaContextReply(data: Buffer, driver: string): { id: number; name: string } {
  const c = new PayloadCursor(data);
  const id = c.u32();
  if (id === undefined) throw protocolError('malformed NBD_REP_META_CONTEXT', driver);
  const name = c.string();
  if (name === undefined) {
    throw protocolError(`NBD_REP_META_CONTEXT: context name ${c.problem} (bytes ${data.subarray(4, 4 + 64).toString('hex')})`, driver);
  }
  return { id, name };
}

async function setMetaContexts(reader: ByteReader, send: Send, opts: NegotiateOptions, into: Map<string, number>): Promise<void> {
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(opts.metaContexts.length, 0);
  const data = Buffer.concat([exportNameData(opts.exportName), count, ...opts.metaContexts.map(encodeString32)]);
  const names = new Map<number, string>(); // id → context name
  const r = await haggle(reader, send, opts.driver, OPT.SET_META_CONTEXT, data, (reply) => {
    if (reply.type !== REP.META_CONTEXT) return;
    const { id, name } = parseMetaContextReply(reply.data, opts.driver);
    // proto.md: one reply "for each selected metadata context, each with a unique metadata
    // context ID". An id given twice would have one BLOCK_STATUS chunk taken as the status of two
    // contexts (say base:allocation's as a dirty bitmap's); a name given twice, two ids for it.
    if (into.has(name)) throw protocolError(`NBD_REP_META_CONTEXT: context ${quotedCut(name, SHOWN_NAME)} given twice`, opts.driver);
    const other = names.get(id);
    if (other !== undefined) throw protocolError(`NBD_REP_META_CONTEXT: id ${id} given to both ${quotedCut(other, SHOWN_NAME)} and ${quotedCut(name, SHOWN_NAME)}`, opts.driver);
    names.set(id, name);
    into.set(name, id);
  });
  // A server that cannot do meta contexts still serves data: carry on without them.
  if (r.type !== REP.ACK) into.clear();
}

/**
 * NBD_OPT_GO; returns false when the server does not know GO (caller falls back to EXPORT_NAME).
 * `CORRUPT` (the caller drops the connection) on a malformed NBD_INFO_EXPORT or
 * NBD_INFO_BLOCK_SIZE, or block sizes that break proto.md's rules (`advertised-block-sizes.ts`).
 */
async function go(reader: ByteReader, send: Send, opts: NegotiateOptions, result: NegotiatedExport): Promise<boolean> {
  const requests = Buffer.allocUnsafe(4);
  requests.writeUInt16BE(1, 0);
  requests.writeUInt16BE(INFO.BLOCK_SIZE, 2);
  let sawExport = false;
  let advertised: AdvertisedBlockSizes | undefined;
  const r = await haggle(reader, send, opts.driver, OPT.GO, Buffer.concat([exportNameData(opts.exportName), requests]), (reply) => {
    if (reply.type !== REP.INFO) return;
    const c = new PayloadCursor(reply.data);
    const type = c.u16();
    // proto.md: NBD_INFO_EXPORT's "*length* MUST be 12", NBD_INFO_BLOCK_SIZE's "MUST be 14"
    // (2 of them the type): a payload of another length is malformed.
    if (type === INFO.EXPORT) {
      const size = c.u64();
      const flags = c.u16();
      if (size === undefined || flags === undefined || c.remaining !== 0) throw protocolError('malformed NBD_INFO_EXPORT', opts.driver);
      result.size = size;
      result.flags = flags;
      sawExport = true;
    } else if (type === INFO.BLOCK_SIZE) {
      const min = c.u32();
      const preferred = c.u32();
      const max = c.u32();
      if (min === undefined || preferred === undefined || max === undefined || c.remaining !== 0) {
        throw protocolError('malformed NBD_INFO_BLOCK_SIZE', opts.driver);
      }
      const violation = blockSizeViolation({ min, preferred, max });
      if (violation) throw protocolError(`NBD_INFO_BLOCK_SIZE: ${violation}`, opts.driver);
      advertised = { min, preferred, max };
    }
  });
  if (r.type === REP_ERR.UNSUP) return false;
  if (r.type !== REP.ACK) throw giveUp(r, `export ${quotedCut(opts.exportName, SHOWN_NAME)}`, send, opts.driver);
  if (!sawExport) throw protocolError('NBD_OPT_GO acknowledged without NBD_INFO_EXPORT', opts.driver);
  if (advertised) {
    // The rule tying the maximum to the export size is checked once both are known (the server
    // may send NBD_INFO_BLOCK_SIZE before NBD_INFO_EXPORT).
    const violation = blockSizeViolation(advertised, result.size);
    if (violation) throw protocolError(`NBD_INFO_BLOCK_SIZE: ${violation}`, opts.driver);
    result.blockSizes = { ...advertised, max: Math.min(advertised.max, MAX_PAYLOAD_CAP) };
  }
  return true;
}

function readSize(b: Buffer, at: number, driver: string): number {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError(`export size ${v} too large`, driver);
  return Number(v);
}

/**
 * NBD_OPT_LIST then NBD_OPT_ABORT: the export names the server offers. An NBD_REP_SERVER whose
 * name is not an NBD string (`stringViolation`) or does not fit its payload is `CORRUPT` (the
 * caller drops the connection, no NBD_OPT_ABORT): a name decoded with U+FFFD could not be asked
 * for with NBD_OPT_GO.
 */
export async function listExportsOver(reader: ByteReader, send: Send, driver: string): Promise<string[]> {
  const { fixed } = await greet(reader, send, driver);
  if (!fixed) throw new CairnError('NOT_SUPPORTED', 'server does not support fixed newstyle (no NBD_OPT_LIST)', { driver });
  const names: string[] = [];
  const r = await haggle(reader, send, driver, OPT.LIST, Buffer.alloc(0), (reply) => {
    if (reply.type !== REP.SERVER) return;
    const c = new PayloadCursor(reply.data);
    const name = c.string32();
    if (name === undefined) throw protocolError(`malformed NBD_REP_SERVER: export name ${c.problem}`, driver);
    names.push(name);
  });
  if (r.type !== REP.ACK) throw giveUp(r, 'NBD_OPT_LIST', send, driver);
  send(encodeOption(OPT.ABORT));
  return names;
}

/** NBD_OPT_LIST_META_CONTEXT then NBD_OPT_ABORT: context names matching `queries` (all when empty). */
export async function listMetaContextsOver(reader: ByteReader, send: Send, driver: string, exportName: string, queries: string[]): Promise<string[]> {
  const { fixed } = await greet(reader, send, driver);
  if (!fixed) throw new CairnError('NOT_SUPPORTED', 'server does not support fixed newstyle', { driver });
  const sr = await haggle(reader, send, driver, OPT.STRUCTURED_REPLY, Buffer.alloc(0));
  if (sr.type !== REP.ACK) throw giveUp(sr, 'NBD_OPT_STRUCTURED_REPLY', send, driver);
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(queries.length, 0);
  const names: string[] = [];
  const r = await haggle(reader, send, driver, OPT.LIST_META_CONTEXT, Buffer.concat([exportNameData(exportName), count, ...queries.map(encodeString32)]), (reply) => {
    if (reply.type !== REP.META_CONTEXT) return;
    names.push(parseMetaContextReply(reply.data, driver).name);
  });
  if (r.type !== REP.ACK) throw giveUp(r, 'NBD_OPT_LIST_META_CONTEXT', send, driver);
  send(encodeOption(OPT.ABORT));
  return names;
}
