/**
 * Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md), fixed newstyle only.
 * All integers on the wire are big-endian. Option numbers for meta contexts follow the current
 * specification as implemented by qemu 7.2 (LIST_META_CONTEXT = 9, SET_META_CONTEXT = 10).
 */

/** 'NBDMAGIC', first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT', second server magic and the prefix of every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Prefix of every option reply. */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_SIZE = 16;
export const STRUCTURED_HEADER_SIZE = 20;

/** Handshake flags (server, 16 bits). */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
/** Client flags (32 bits). */
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags (16 bits). */
export const TF = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Option types. */
export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

/** Option reply types; errors have bit 31 set. */
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
} as const;
export const REP_ERR_BIT = 0x80000000;
export const REP_ERR = {
  UNSUP: REP_ERR_BIT + 1,
  POLICY: REP_ERR_BIT + 2,
  INVALID: REP_ERR_BIT + 3,
  PLATFORM: REP_ERR_BIT + 4,
  TLS_REQD: REP_ERR_BIT + 5,
  UNKNOWN: REP_ERR_BIT + 6,
  SHUTDOWN: REP_ERR_BIT + 7,
  BLOCK_SIZE_REQD: REP_ERR_BIT + 8,
  TOO_BIG: REP_ERR_BIT + 9,
} as const;

/** NBD_INFO_* types inside NBD_REP_INFO and in the INFO/GO request list. */
export const INFO = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Command types. */
export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags. */
export const CMD_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/** Structured reply chunk flags and types. */
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;
export const REPLY_TYPE_ERROR_BIT = 1 << 15;

/** Error values carried in replies. */
export const NBD_ERR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** `base:allocation` status flags. */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;
/** `qemu:dirty-bitmap:<name>` status flag. */
export const STATE_DIRTY = 1 << 0;

export const BASE_ALLOCATION = 'base:allocation';
export const DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';

/** Largest payload any request carries or asks for (32 MiB, qemu's limit). */
export const MAX_PAYLOAD_CAP = 32 * 1024 * 1024;
/**
 * WRITE lengths from which an oversize payload may be treated as a denial of service (the
 * connection dropped); below it an oversize WRITE is read, discarded and refused. proto.md: "any
 * *length* less than 2^25 (33,554,432) bytes SHOULD NOT be considered a denial of service attack
 * (even if the advertised maximum block size is smaller)".
 */
export const DOS_WRITE_LENGTH = 2 ** 25;
/** Longest string (export name, context name, message) the protocol allows. */
export const MAX_STRING = 4096;
