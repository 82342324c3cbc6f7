import { isUtf8 } from 'node:buffer';
import { CairnError, quotedCut } from '@cairn/core';
import { MAX_STRING } from './protocol.js';

/**
 * Code points of a name a message echoes (core's quotedCut: never splits a character, notes the
 * whole length when it cuts).
 */
export const SHOWN_NAME = 64;

/**
 * Code points of the peer's free text (an NBD_REP_ERR message, an error chunk's message) a message
 * echoes, with core's escapedCut (control characters escaped): a server may send 64 KiB of it,
 * which would bury the error.
 */
export const SHOWN_MESSAGE = 200;

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

/**
 * Why the string `value` cannot go out as an NBD string, or undefined when it can: not a string;
 * a lone surrogate (UTF-8 has no encoding for it, and `Buffer.from` would send U+FFFD in its place,
 * naming something the caller never named); or its UTF-8 breaks `stringViolation` (NUL, over 4096
 * bytes). The reason reads after the string's name, as stringViolation's.
 */
export function textViolation(value: unknown): string | undefined {
  if (typeof value !== 'string') return `is not a string (${typeof value})`;
  if (/\p{Cs}/u.test(value)) return 'is not valid UTF-8 (it holds a lone surrogate)';
  return stringViolation(Buffer.from(value, 'utf8'));
}

/**
 * Throws `INVALID_INPUT` naming `field` (e.g. `exportName`, `metaContexts[1]`) when `value` is not
 * an NBD string (textViolation). For what this side sends: checked before anything is sent.
 */
export function assertNbdString(value: unknown, field: string, driver: string): asserts value is string {
  const violation = textViolation(value);
  if (violation === undefined) return;
  const shown = typeof value === 'string' ? ` ${quotedCut(value, SHOWN_NAME)}` : '';
  throw new CairnError('INVALID_INPUT', `${field}${shown} ${violation}`, { driver, details: { field } });
}

/** `assertNbdString` for each of `values` (`field[i]`); INVALID_INPUT when `values` is not an array. */
export function assertNbdStrings(values: unknown, field: string, driver: string): asserts values is string[] {
  if (!Array.isArray(values)) throw new CairnError('INVALID_INPUT', `${field} must be an array of strings`, { driver, details: { field } });
  values.forEach((v, i) => assertNbdString(v, `${field}[${i}]`, driver));
}
