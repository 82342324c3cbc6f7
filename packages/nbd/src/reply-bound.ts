import { CMD, CMD_FLAG, STRUCTURED_HEADER_SIZE } from './protocol.js';

/**
 * Most descriptors the server puts in the BLOCK_STATUS chunk of one context (a 512 KiB chunk),
 * so that one request's reply is bounded whatever the range and however fragmented the export.
 * proto.md, NBD_REPLY_TYPE_BLOCK_STATUS: "the server MAY return fewer descriptors in the reply
 * than would be required to fully specify the whole range of requested information to the
 * client, if looking up the information would be too resource-intensive for the server, so long
 * as at least one extent is returned"; clients ask again from the first offset not described.
 */
export const MAX_STATUS_DESCRIPTORS = 65536;

/** Bytes of one BLOCK_STATUS chunk with `descriptors` descriptors: header, context id, 8 bytes each. */
export function statusChunkBytes(descriptors: number): number {
  return STRUCTURED_HEADER_SIZE + 4 + 8 * descriptors;
}

/** What `replyBound` needs of a request. */
export interface BoundedRequest {
  type: number;
  flags: number;
  length: number;
}

/**
 * The most bytes of reply a request can make the server hold, charged to the connection's read
 * budget from its start until the reply left the socket's write buffer (ServerConnection):
 * - READ within `maxPayload`: its length (the data; headers are not counted). Above it: 0 (the
 *   reply is an error).
 * - BLOCK_STATUS: one chunk per selected context (`contexts`), each with at most one descriptor
 *   (REQ_ONE) or min(MAX_STATUS_DESCRIPTORS, blocks of `minBlockSize` in the request) descriptors:
 *   every descriptor is at least one block long (one byte without a minimum block size) and the
 *   range described is the request rounded up to whole blocks (RequestHandler.blockStatus).
 * - Anything else: 0. Their replies are small and fixed (a simple reply or one error chunk); the
 *   connection parses no request while its socket's write buffer is above the high-water mark.
 * The handler reports the real size of a BLOCK_STATUS reply once built (`RequestHooks.sized`), so
 * the difference is given back before the reply is sent.
 */
export function replyBound(req: BoundedRequest, contexts: number, maxPayload: number, minBlockSize: number): number {
  if (req.type === CMD.READ) return req.length <= maxPayload ? req.length : 0;
  if (req.type !== CMD.BLOCK_STATUS) return 0;
  const blocks = (req.flags & CMD_FLAG.REQ_ONE) !== 0 ? 1 : Math.max(1, Math.ceil(req.length / minBlockSize));
  return contexts * statusChunkBytes(Math.min(MAX_STATUS_DESCRIPTORS, blocks));
}
