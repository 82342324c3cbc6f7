/**
 * Reading JSON in the exact form JSON.stringify writes, straight from its bytes, for the scanners
 * that fill compact structures without a JavaScript value per element (index-scan.ts, ChunkList).
 * Anything else is theirs to refuse; the callers then parse the text as JSON.
 */
import { ID_HEX, decodeIdBytes } from './chunk-id.js';

const U32_MAX = 0xffffffff;
const QUOTE = 0x22;
export const [COMMA, LBRACKET, RBRACKET, RBRACE] = [0x2c, 0x5b, 0x5d, 0x7d];

/** A position in JSON text held as bytes; each method consumes what it matches and nothing otherwise. */
export class JsonCursor {
  constructor(
    readonly bytes: Uint8Array,
    public at = 0,
  ) {}

  /** Consumes `text` (ASCII) when it comes next. */
  take(text: string): boolean {
    if (this.at + text.length > this.bytes.length) return false;
    for (let i = 0; i < text.length; i++) if (this.bytes[this.at + i] !== text.charCodeAt(i)) return false;
    this.at += text.length;
    return true;
  }

  byte(b: number): boolean {
    if (this.bytes[this.at] !== b) return false;
    this.at++;
    return true;
  }

  /** A quoted id of 64 lowercase hex digits, decoded into `into` at `offset` (when given); false otherwise. */
  id(into?: Uint8Array, offset = 0): boolean {
    const b = this.bytes;
    if (b[this.at] !== QUOTE || b[this.at + ID_HEX + 1] !== QUOTE || !decodeIdBytes(b, this.at + 1, into, offset)) return false;
    this.at += ID_HEX + 2;
    return true;
  }

  /** A u32 in canonical decimal (no sign, no leading zero, no fraction); -1 otherwise. */
  u32(): number {
    const b = this.bytes;
    const start = this.at;
    let n = 0;
    while (this.at < b.length && b[this.at]! >= 48 && b[this.at]! <= 57 && this.at - start < 11) n = n * 10 + (b[this.at++]! - 48);
    const digits = this.at - start;
    if (digits === 0 || (digits > 1 && b[start] === 48) || n > U32_MAX) return -1;
    return n;
  }
}
