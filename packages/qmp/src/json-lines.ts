/**
 * Splits a QMP byte stream into JSON messages. qemu writes one JSON object per line (`\r\n`).
 */

import { RECEIVED_EXCERPT_CHARS, receivedExcerpt } from './received.js';

/** Longest line accepted before the stream is declared broken. Default 64 MiB. */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

const NEWLINE = 0x0a;

/** What one `push` finished: the messages of the complete lines, and the failure that ended the stream, if any. */
export interface JsonLineBatch {
  /** The messages of the complete lines before any failure, in order (blank lines skipped). */
  messages: unknown[];
  /**
   * Set when the stream broke in this chunk, after `messages`: a SyntaxError for a line that is
   * not JSON, or a RangeError for one longer than the limit. The decoder is unusable afterwards.
   */
  failure?: JsonLineFailure;
}

export interface JsonLineFailure {
  error: SyntaxError | RangeError;
  /** The start of the offending line as received (at most RECEIVED_EXCERPT_CHARS, JSON-quoted). */
  line: string;
}

export class JsonLineDecoder {
  /** The bytes of the line not finished yet, as received (never holding a newline). */
  private parts: Buffer[] = [];
  private partBytes = 0;
  private broken = false;

  constructor(private readonly maxLineBytes: number = DEFAULT_MAX_LINE_BYTES) {}

  /**
   * Feeds a chunk and returns the complete messages it finished, in order, and, when a line in it
   * is not JSON or one grows past `maxLineBytes` bytes (without its newline), that failure: the
   * lines complete before the bad one are still returned, nothing after it is read, and the
   * decoder is unusable afterwards (a later push returns nothing). Never throws.
   *
   * Cost is linear in the bytes received: only the new chunk is searched for newlines, and a
   * line's bytes are joined and decoded once, when its newline arrives. Lines are split on the
   * byte 0x0a, which UTF-8 never uses inside a multi-byte character, so a character split
   * across chunks is decoded whole. The chunk is copied when part of it is kept.
   */
  push(chunk: Buffer): JsonLineBatch {
    const messages: unknown[] = [];
    if (this.broken) return { messages };
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE, start); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      const tooLong = this.keep(chunk, start, nl);
      if (tooLong) return { messages, failure: tooLong };
      const line = (this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partBytes)).toString('utf8').trim();
      this.parts = [];
      this.partBytes = 0;
      start = nl + 1;
      if (line.length === 0) continue;
      try {
        messages.push(JSON.parse(line));
      } catch (err) {
        this.broken = true;
        return { messages, failure: { error: err as SyntaxError, line: receivedExcerpt(line.slice(0, RECEIVED_EXCERPT_CHARS)) } };
      }
    }
    const tooLong = this.keep(chunk, start, chunk.length);
    return tooLong ? { messages, failure: tooLong } : { messages };
  }

  /** Appends `chunk[from, to)` to the unfinished line; the failure once it is past `maxLineBytes`. */
  private keep(chunk: Buffer, from: number, to: number): JsonLineFailure | undefined {
    if (to === from) return undefined;
    this.partBytes += to - from;
    if (this.partBytes > this.maxLineBytes) {
      this.broken = true;
      const head = (this.parts[0] ?? chunk.subarray(from, to)).subarray(0, RECEIVED_EXCERPT_CHARS).toString('utf8');
      this.parts = [];
      return { error: new RangeError(`QMP line longer than ${this.maxLineBytes} bytes`), line: receivedExcerpt(head) };
    }
    this.parts.push(Buffer.from(chunk.subarray(from, to)));
    return undefined;
  }
}
