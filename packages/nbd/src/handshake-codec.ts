import type { ByteReader } from './byte-reader.js';
import { protocolError } from './error-map.js';
import { stringViolation } from './nbd-string.js';
import { DOS_WRITE_LENGTH, IHAVEOPT, MAX_STRING, OPTION_REPLY_MAGIC } from './protocol.js';

/**
 * Largest option or option reply payload either side reads and parses (64 KiB). A larger option
 * reply is a violation (`readOptionReply`); a larger option is not (see `readOption`).
 */
export const MAX_OPTION_DATA = 64 * 1024;

/**
 * Largest option data the server reads and discards to answer the option with an error (2^25,
 * 32 MiB). Beyond it the option is a denial of service and the connection is dropped: proto.md
 * lets a server "initiate a hard disconnect" when "a client's behaviour constitutes a denial of
 * service", and uses 2^25 as the length below which a payload "SHOULD NOT be considered a denial
 * of service attack" in transmission. The handshake timeout bounds how many such options one
 * client gets through.
 */
export const MAX_DISCARDED_OPTION_DATA = DOS_WRITE_LENGTH;

export interface OptionMessage {
  option: number;
  /** The option data; empty when `oversize` is set. */
  data: Buffer;
  /**
   * Set (to the declared length) when the data is longer than `MAX_OPTION_DATA`: it was not read,
   * and the caller either drops the connection or skips it with `discardOptionData`.
   */
  oversize?: number;
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** Encodes one client option: IHAVEOPT, option, length, data. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.allocUnsafe(16);
  head.writeBigUInt64BE(IHAVEOPT, 0);
  head.writeUInt32BE(option, 8);
  head.writeUInt32BE(data.length, 12);
  return Buffer.concat([head, data]);
}

/** Encodes one server option reply. */
export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.allocUnsafe(20);
  head.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  head.writeUInt32BE(option, 8);
  head.writeUInt32BE(type >>> 0, 12);
  head.writeUInt32BE(data.length, 16);
  return Buffer.concat([head, data]);
}

/** Reads one option reply; `CORRUPT` on a bad magic or an oversize payload. */
export async function readOptionReply(reader: ByteReader, driver: string): Promise<OptionReply> {
  const head = await reader.read(20);
  if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw protocolError('bad option reply magic', driver);
  const option = head.readUInt32BE(8);
  const type = head.readUInt32BE(12);
  const length = head.readUInt32BE(16);
  if (length > MAX_OPTION_DATA) throw protocolError(`option reply of ${length} bytes`, driver);
  return { option, type, data: await reader.read(length) };
}

/**
 * Reads one client option header and, up to `MAX_OPTION_DATA` bytes, its data. Longer data is
 * left unread (`oversize`); `CORRUPT` on a bad magic or data over `MAX_DISCARDED_OPTION_DATA`.
 */
export async function readOption(reader: ByteReader, driver: string): Promise<OptionMessage> {
  const head = await reader.read(16);
  if (head.readBigUInt64BE(0) !== IHAVEOPT) throw protocolError('bad option magic', driver);
  const option = head.readUInt32BE(8);
  const length = head.readUInt32BE(12);
  if (length > MAX_DISCARDED_OPTION_DATA) throw protocolError(`option of ${length} bytes`, driver);
  if (length > MAX_OPTION_DATA) return { option, data: Buffer.alloc(0), oversize: length };
  return { option, data: await reader.read(length) };
}

/**
 * Reads and drops `length` bytes of option data, `MAX_OPTION_DATA` at a time: at most that much
 * of it is held at once, however long the data.
 */
export async function discardOptionData(reader: ByteReader, length: number): Promise<void> {
  for (let left = length; left > 0; ) {
    const n = Math.min(left, MAX_OPTION_DATA);
    await reader.read(n);
    left -= n;
  }
}

/**
 * The UTF-8 bytes of a message for an error reply, cut to at most 4096 bytes on a character
 * boundary: proto.md, a string (error messages included) "MUST be no longer than 4096 bytes".
 */
export function encodeMessage(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= MAX_STRING) return bytes;
  let end = MAX_STRING;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // bytes[end] continues the character before it
  return bytes.subarray(0, end);
}

/** Appends a u32 length and the UTF-8 bytes of `s`. */
export function encodeString32(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([len, bytes]);
}

/**
 * A bounds-checked cursor over an option payload; every overrun, and every string that is not an
 * NBD string (`stringViolation`), is `undefined`.
 */
export class PayloadCursor {
  private pos = 0;
  /**
   * Why the last `string()`/`string32()` gave undefined, worded to follow the string's name
   * ("is not valid UTF-8", "runs past the end of the payload"); undefined after one succeeded.
   */
  problem: string | undefined;
  constructor(private readonly buf: Buffer) {}

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  u16(): number | undefined {
    if (this.remaining < 2) return undefined;
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number | undefined {
    if (this.remaining < 4) return undefined;
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): number | undefined {
    if (this.remaining < 8) return undefined;
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(v);
  }

  /**
   * A string of `length` bytes (or all remaining bytes). Undefined (with `problem` set, the cursor
   * not moved) past the end or when the bytes are not an NBD string: over 4096 bytes, not valid
   * UTF-8, or containing NUL.
   */
  string(length = this.remaining): string | undefined {
    if (length > this.remaining) {
      this.problem = `of ${length} bytes runs past the end of the payload`;
      return undefined;
    }
    const bytes = this.buf.subarray(this.pos, this.pos + length);
    this.problem = stringViolation(bytes);
    if (this.problem !== undefined) return undefined;
    this.pos += length;
    return bytes.toString('utf8');
  }

  /** A u32-length-prefixed string (see `string`). */
  string32(): string | undefined {
    const n = this.u32();
    if (n === undefined) {
      this.problem = 'has no 32-bit length';
      return undefined;
    }
    return this.string(n);
  }
}
