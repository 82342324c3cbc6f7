/**
 * Splits a QMP byte stream into JSON messages. qemu writes one JSON object per line (`\r\n`).
 */
import { StringDecoder } from 'node:string_decoder';

/** Longest line accepted before the stream is declared broken. Default 64 MiB. */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

export class JsonLineDecoder {
  private readonly decoder = new StringDecoder('utf8');
  private pending = '';

  constructor(private readonly maxLineBytes: number = DEFAULT_MAX_LINE_BYTES) {}

  /**
   * Feeds a chunk and returns the complete messages it finished, in order. Blank lines are
   * skipped. Throws a SyntaxError on a line that is not JSON, or a RangeError when a line
   * exceeds `maxLineBytes`; the decoder is unusable afterwards.
   */
  push(chunk: Buffer): unknown[] {
    this.pending += this.decoder.write(chunk);
    const out: unknown[] = [];
    let start = 0;
    for (let nl = this.pending.indexOf('\n', start); nl !== -1; nl = this.pending.indexOf('\n', start)) {
      const line = this.pending.slice(start, nl).trim();
      start = nl + 1;
      if (line.length > 0) out.push(JSON.parse(line));
    }
    this.pending = this.pending.slice(start);
    if (this.pending.length > this.maxLineBytes) throw new RangeError(`QMP line longer than ${this.maxLineBytes} bytes`);
    return out;
  }
}
