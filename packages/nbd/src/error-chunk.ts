import type { CairnError } from '@cairn/core';
import { nbdReplyError, protocolError } from './error-map.js';
import { CMD, MAX_STRING, NBD_ERR, REPLY_TYPE } from './protocol.js';

/** What decoding an error chunk needs of the request it answers. */
export interface ErrorChunkRequest {
  cmd: number;
  offset: number;
  length: number;
  what: string;
}

/** Commands proto.md defines `NBD_REPLY_TYPE_ERROR_OFFSET` for. */
const ERROR_OFFSET_COMMANDS: ReadonlySet<number> = new Set([CMD.READ, CMD.WRITE, CMD.TRIM, CMD.BLOCK_STATUS]);

/** Payload bytes every error chunk starts with: 32 bits of error, 16 bits of message length. */
const ERROR_PREFIX = 6;
/** Bytes of the offset `NBD_REPLY_TYPE_ERROR_OFFSET` carries after its message. */
const OFFSET_FIELD = 8;

/** What an error chunk reports. */
export interface ErrorChunk {
  /** The failure of the request. */
  error: CairnError;
  /** `ERROR_OFFSET` in a reply to a command proto.md defines it for: the offset it names (inside the request). */
  offset?: number;
}

/**
 * How many leading payload bytes of an error chunk of type `type` (bit 15 set) announcing `length`
 * bytes the client buffers, decided from the chunk header alone; the caller reads and drops the
 * rest unbuffered. proto.md: every error chunk starts with the error and the message length, then
 * the message, which is a string and so MUST be no longer than 4096 bytes (`MAX_STRING`).
 * - `ERROR`, `ERROR_OFFSET`: all of it. Their length is the message length plus 6 (plus 14), so a
 *   longer one than a 4096-byte message allows is `CORRUPT` here, before any payload is read.
 * - Other (unknown) error types: at most the error, the message length and a message of 4096
 *   bytes; what follows the message is nothing this client knows (`errorChunkError` then finds a
 *   longer message from its length field).
 * Any error chunk shorter than 6 bytes is `CORRUPT`. So no error chunk buffers more than 4110
 * bytes. O(1).
 */
export function errorChunkKeep(type: number, length: number, driver: string): number {
  if (length < ERROR_PREFIX) throw protocolError(`error chunk of ${length} bytes, shorter than ${ERROR_PREFIX}`, driver);
  const fields = type === REPLY_TYPE.ERROR ? ERROR_PREFIX : type === REPLY_TYPE.ERROR_OFFSET ? ERROR_PREFIX + OFFSET_FIELD : undefined;
  if (fields === undefined) return Math.min(length, ERROR_PREFIX + MAX_STRING);
  if (length > fields + MAX_STRING) {
    throw protocolError(`error chunk of type ${type} and ${length} bytes: its message would be ${length - fields} bytes, longer than ${MAX_STRING}`, driver);
  }
  return length;
}

/**
 * What the error chunk of type `type` (bit 15 set) with payload `b` reports for `r`; `b` is the
 * part `errorChunkKeep` buffers. proto.md: every error chunk starts with the error and the
 * message length, then the message; the chunk length covers the fields of its type that follow.
 * Throws a `CORRUPT` CairnError (the caller fails the connection) for:
 * - any error chunk shorter than 6 bytes, whose message is longer than 4096 bytes, or whose
 *   message overruns it;
 * - `ERROR` (2^15+1) whose length is not 6 + message length (it has no field after the message);
 * - `ERROR_OFFSET` (2^15+2) whose length is not 14 + message length (the 64-bit offset follows the
 *   message), or, in a reply to READ, WRITE, TRIM or BLOCK_STATUS, whose offset lies outside the
 *   request. proto.md defines it for those commands only: to any other it is an unexpected error
 *   type, which fails the request and leaves the connection up, its offset unused (not returned).
 * Other error types have no field after the message that this client knows. An error value of 0
 * (proto.md: MUST be non-zero) is taken as EIO. O(1) but for decoding the message.
 */
export function errorChunkError(type: number, r: ErrorChunkRequest, b: Buffer, driver: string): ErrorChunk {
  if (b.length < ERROR_PREFIX) throw protocolError(`error chunk of ${b.length} bytes, shorter than ${ERROR_PREFIX}`, driver);
  const end = ERROR_PREFIX + b.readUInt16BE(4);
  if (end - ERROR_PREFIX > MAX_STRING) throw protocolError(`error chunk message of ${end - ERROR_PREFIX} bytes, longer than ${MAX_STRING}`, driver);
  if (end > b.length) throw protocolError(`error chunk message of ${end - ERROR_PREFIX} bytes overruns the chunk of ${b.length}`, driver);
  if (type === REPLY_TYPE.ERROR && b.length !== end) {
    throw protocolError(`ERROR chunk of ${b.length} bytes for a message of ${end - ERROR_PREFIX} (must be ${end})`, driver);
  }
  let offset: number | undefined;
  if (type === REPLY_TYPE.ERROR_OFFSET) {
    if (b.length !== end + OFFSET_FIELD) {
      throw protocolError(`ERROR_OFFSET chunk of ${b.length} bytes for a message of ${end - ERROR_PREFIX} (must be ${end + OFFSET_FIELD})`, driver);
    }
    const at = b.readUInt32BE(end) * 0x100000000 + b.readUInt32BE(end + 4);
    if (ERROR_OFFSET_COMMANDS.has(r.cmd)) {
      if (at < r.offset || at >= r.offset + r.length) throw protocolError(`ERROR_OFFSET at ${at}, outside the request [${r.offset}, +${r.length})`, driver);
      offset = at;
    }
  }
  const error = nbdReplyError(b.readUInt32BE(0) || NBD_ERR.EIO, r.what, b.toString('utf8', ERROR_PREFIX, end), driver);
  return offset === undefined ? { error } : { error, offset };
}
