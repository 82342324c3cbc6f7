import { isUtf8 } from 'node:buffer';
import { MAX_STRING } from './protocol.js';

/**
 * Why `bytes` are not an NBD string, or undefined when they are. proto.md: "Where this document
 * refers to a string, then unless otherwise stated, that string is a sequence of UTF-8 code points,
 * which is not `NUL` terminated, MUST NOT contain `NUL` characters, SHOULD be no longer than 256
 * bytes and MUST be no longer than 4096 bytes" (export names, meta context names and queries; for
 * meta context names also "it MUST be valid UTF-8 data"). Bytes that are not UTF-8 must not be
 * decoded leniently: U+FFFD in place of the bad bytes would name something the peer never named.
 * The reason reads after the string's name ("export name is not valid UTF-8").
 */
export function stringViolation(bytes: Uint8Array): string | undefined {
  if (bytes.length > MAX_STRING) return `is ${bytes.length} bytes, over ${MAX_STRING}`;
  if (!isUtf8(bytes)) return 'is not valid UTF-8';
  if (bytes.includes(0)) return 'contains NUL';
  return undefined;
}
