/**
 * Splits a QMP byte stream into JSON messages. qemu writes one JSON object per line (`\r\n`).
 */

/** Longest line accepted before the stream is declared broken. Default 64 MiB. */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

const NEWLINE = 0x0a;

export class JsonLineDecoder {
  /** The bytes of the line not finished yet, as received (never holding a newline). */
  private parts: Buffer[] = [];
  private partBytes = 0;

  constructor(private readonly maxLineBytes: number = DEFAULT_MAX_LINE_BYTES) {}

  /**
   * Feeds a chunk and returns the complete messages it finished, in order. Blank lines are
   * skipped. Throws a SyntaxError on a line that is not JSON, or a RangeError once a line
   * (without its newline) exceeds `maxLineBytes` bytes; the decoder is unusable afterwards.
   *
   * Cost is linear in the bytes received: only the new chunk is searched for newlines, and a
   * line's bytes are joined and decoded once, when its newline arrives. Lines are split on the
   * byte 0x0a, which UTF-8 never uses inside a multi-byte character, so a character split
   * across chunks is decoded whole. The chunk is copied when part of it is kept.
   */
  push(chunk: Buffer): unknown[] {
    const out: unknown[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE, start); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      this.keep(chunk, start, nl);
      const line = (this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partBytes)).toString('utf8').trim();
      this.parts = [];
      this.partBytes = 0;
      start = nl + 1;
      if (line.length > 0) out.push(JSON.parse(line));
    }
    this.keep(chunk, start, chunk.length);
    return out;
  }

  /** Appends `chunk[from, to)` to the unfinished line; RangeError past `maxLineBytes`. */
  private keep(chunk: Buffer, from: number, to: number): void {
    if (to === from) return;
    this.partBytes += to - from;
    if (this.partBytes > this.maxLineBytes) throw new RangeError(`QMP line longer than ${this.maxLineBytes} bytes`);
    this.parts.push(Buffer.from(chunk.subarray(from, to)));
  }
}
