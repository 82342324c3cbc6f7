import { protocolError } from './error-map.js';
import { CMD } from './protocol.js';

/** One descriptor of a block-status reply, made absolute. */
export interface NbdExtent {
  offset: number;
  length: number;
  /** Context-defined status flags (base:allocation: 1 = hole, 2 = zero; dirty bitmap: 1 = dirty). */
  flags: number;
}

/** What taking a BLOCK_STATUS chunk needs of, and records on, the request it answers. */
export interface StatusRequest {
  cmd: number;
  offset: number;
  length: number;
  /** The context id whose descriptors to keep. */
  contextId?: number;
  /** Its descriptors, once its chunk arrived. */
  extents?: NbdExtent[];
  /** The context ids whose chunk has arrived in this reply; created here. */
  statusContexts?: number[];
}

/**
 * Takes the `NBD_REPLY_TYPE_BLOCK_STATUS` chunk with payload `b` in the reply to `r`; throws a
 * `CORRUPT` CairnError (the caller fails the connection) unless `r` is a BLOCK_STATUS request and
 * `b` is a context id and one or more descriptors (4 + a multiple of 8 bytes). proto.md: the chunk
 * appears exactly once per negotiated context id in a reply, so a second one for an id, or one for
 * an id not in `contextIds`, is CORRUPT. The descriptors for `r.contextId` become `r.extents` (see
 * `descriptors`). O(negotiated contexts + descriptors).
 */
export function takeStatusChunk(r: StatusRequest, b: Buffer, contextIds: ReadonlySet<number>, driver: string): void {
  if (r.cmd !== CMD.BLOCK_STATUS || b.length < 12 || (b.length - 4) % 8 !== 0) throw protocolError('bad BLOCK_STATUS chunk', driver);
  const id = b.readUInt32BE(0);
  if (!contextIds.has(id)) throw protocolError(`BLOCK_STATUS chunk for meta context id ${id}, which was not negotiated`, driver);
  const seen = (r.statusContexts ??= []);
  if (seen.includes(id)) throw protocolError(`second BLOCK_STATUS chunk for meta context id ${id} in one reply`, driver);
  seen.push(id);
  if (id === r.contextId) r.extents = descriptors(r, b, driver);
}

/**
 * Checks the successful reply to the BLOCK_STATUS request `r`, whose chunks `takeStatusChunk`
 * took: proto.md asks of a successful reply exactly one BLOCK_STATUS chunk per negotiated context
 * id (a reply with an error chunk need not have them), so a reply without a chunk for `r.contextId`,
 * or for any other id in `contextIds`, is `CORRUPT`. O(negotiated contexts), and their square to
 * name the missing ones.
 */
export function checkStatusReply(r: StatusRequest, contextIds: ReadonlySet<number>, driver: string): void {
  if (r.extents === undefined) throw protocolError(`block status reply without a chunk for meta context id ${r.contextId}`, driver);
  const seen = r.statusContexts ?? [];
  if (seen.length === contextIds.size) return; // `seen` holds distinct ids of `contextIds` only
  const missing = [...contextIds].filter((id) => !seen.includes(id));
  throw protocolError(`block status reply without a chunk for negotiated meta context id ${missing.join(', ')}`, driver);
}

/**
 * The descriptors of a BLOCK_STATUS chunk as absolute extents. proto.md lets the final extent run
 * past the requested range when REQ_ONE is not set (this client never sets it); it is trimmed to
 * the request. A descriptor starting at or past the end of the request is CORRUPT, as is one of
 * length zero.
 */
function descriptors(r: StatusRequest, b: Buffer, driver: string): NbdExtent[] {
  const out: NbdExtent[] = [];
  const end = r.offset + r.length;
  let at = r.offset;
  for (let i = 4; i < b.length; i += 8) {
    const length = b.readUInt32BE(i);
    if (length === 0) throw protocolError('zero-length block status descriptor', driver);
    if (at >= end) throw protocolError('block status descriptors exceed the request', driver);
    out.push({ offset: at, length: Math.min(length, end - at), flags: b.readUInt32BE(i + 4) });
    at += length;
  }
  return out;
}
