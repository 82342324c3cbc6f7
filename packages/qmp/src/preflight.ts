/**
 * Client-side checks of a command before it is sent, for arguments that qemu 7.2 would not answer
 * cleanly:
 * - `block-dirty-bitmap-merge` with an empty `bitmaps` list makes qemu-storage-daemon 7.2 die
 *   with SIGSEGV (directly or inside a transaction). Observed here.
 * - A string (a key or a value, at any depth, or the command name) that qemu's JSON parser
 *   refuses: one holding a lone UTF-16 surrogate (JSON.stringify writes it as `\ud800`) or a
 *   Unicode noncharacter (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF). qemu answers such a request with
 *   `JSON parse error, … is not a valid Unicode character` and no `id`, since it could not read
 *   one, so the answer matches no call and the call would wait for its timeout (forever with
 *   `timeoutMs: Infinity`). Observed here.
 * - A message past the limits of qemu's JSON streamer (qobject/json-streamer.c): objects and
 *   arrays nested more than 1024 deep (`MAX_NESTING`, the command's own object counted), more
 *   than 2^21 tokens (`MAX_TOKEN_COUNT`), or 64 MiB of tokens (`MAX_TOKEN_SIZE`; a single token
 *   is cut there by its lexer too). qemu answers `JSON nesting depth limit exceeded` (or `token
 *   count`, `token size`) without an `id`, as above. Observed here: 1024 levels and 2^21 tokens
 *   are answered, 1025 and 2^21 + 1 are not. The size is checked on the encoded line (JSON.stringify
 *   writes no whitespace, which would be no token), refusing from 64 MiB, at most a byte short of
 *   qemu's edge (qemu 7.2 takes minutes over a message that long, so the exact edge was not
 *   observed). Linear in the line's length, and free for lines of 1024 characters or fewer.
 */
import { CairnError } from '@cairn/core';

/** qemu's JSON streamer limits (qobject/json-streamer.c). */
export const QEMU_JSON_MAX_NESTING = 1024;
export const QEMU_JSON_MAX_TOKEN_COUNT = 2 * 1024 * 1024;
export const QEMU_JSON_MAX_TOKEN_BYTES = 64 * 1024 * 1024;

const hasEmptyMerge = (data: unknown): boolean => {
  const bitmaps = (data as { bitmaps?: unknown } | undefined)?.bitmaps;
  return Array.isArray(bitmaps) && bitmaps.length === 0;
};

/** A code point qemu's JSON parser refuses: a surrogate (only a lone one can appear in a JS string here) or a noncharacter. */
const UNPARSABLE = /[\p{Cs}\p{Noncharacter_Code_Point}]/u;

/** The first string in `value` (keys included, any depth) that qemu cannot parse, or undefined. */
function unparsableString(value: unknown): string | undefined {
  if (typeof value === 'string') return UNPARSABLE.test(value) ? value : undefined;
  if (typeof value !== 'object' || value === null) return undefined;
  for (const [key, item] of Array.isArray(value) ? value.entries() : Object.entries(value)) {
    const bad = (typeof key === 'string' ? unparsableString(key) : undefined) ?? unparsableString(item);
    if (bad !== undefined) return bad;
  }
  return undefined;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
/** `{ } [ ] : ,`, whitespace and the quote: what ends a number or a literal (true, false, null). */
const DELIMITER = new Set([0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x2c, 0x20, 0x09, 0x0a, 0x0d, QUOTE]);

/**
 * The deepest nesting of objects and arrays in the JSON text `json` (as JSON.stringify writes it)
 * and its number of tokens as qemu's lexer counts them (brackets, braces, colons, commas, strings,
 * numbers, literals; whitespace is none). Stops counting once past both limits. O(length).
 */
export function jsonShape(json: string): { depth: number; tokens: number } {
  let depth = 0;
  let deepest = 0;
  let tokens = 0;
  const n = json.length;
  for (let i = 0; i < n; i++) {
    const c = json.charCodeAt(i);
    if (c === QUOTE) {
      tokens++;
      // Jump to the closing quote: the next one not escaped by an odd run of backslashes.
      for (let q = json.indexOf('"', i + 1); ; q = json.indexOf('"', q + 1)) {
        if (q < 0) return { depth: deepest, tokens };
        let slashes = 0;
        while (json.charCodeAt(q - 1 - slashes) === BACKSLASH) slashes++;
        if (slashes % 2 === 0) {
          i = q;
          break;
        }
      }
    } else if (c === 0x7b || c === 0x5b) {
      tokens++;
      if (++depth > deepest) deepest = depth;
    } else if (c === 0x7d || c === 0x5d) {
      tokens++;
      depth--;
    } else if (c === 0x3a || c === 0x2c) {
      tokens++;
    } else if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) {
      tokens++;
      while (i + 1 < n && !DELIMITER.has(json.charCodeAt(i + 1))) i++;
    }
    if (deepest > QEMU_JSON_MAX_NESTING && tokens > QEMU_JSON_MAX_TOKEN_COUNT) break;
  }
  return { depth: deepest, tokens };
}

/** Why qemu's JSON streamer would refuse the message `line` (see the file comment), or undefined. */
function pastParserLimits(line: string): string | undefined {
  if (line.length <= QEMU_JSON_MAX_NESTING) return undefined; // too short to reach any limit
  const bytes = Buffer.byteLength(line) - (line.endsWith('\n') ? 1 : 0);
  if (bytes >= QEMU_JSON_MAX_TOKEN_BYTES) return `the request is ${bytes} bytes; qemu's JSON parser takes less than ${QEMU_JSON_MAX_TOKEN_BYTES} bytes of tokens`;
  const { depth, tokens } = jsonShape(line);
  if (depth > QEMU_JSON_MAX_NESTING) return `the request nests objects and arrays ${depth} deep; qemu's JSON parser takes at most ${QEMU_JSON_MAX_NESTING}`;
  if (tokens > QEMU_JSON_MAX_TOKEN_COUNT) return `the request has ${tokens} JSON tokens; qemu's JSON parser takes at most ${QEMU_JSON_MAX_TOKEN_COUNT}`;
  return undefined;
}

/**
 * Throws INVALID_INPUT when `command` with `args`, encoded as the request line `line`, would crash
 * the daemon or could not be parsed by it (see the file comment), so nothing is sent. No I/O.
 */
export function assertSafeCommand(command: string, args: unknown, line: string, driver: string): void {
  const limit = pastParserLimits(line);
  if (limit !== undefined) throw new CairnError('INVALID_INPUT', `${command}: ${limit}`, { driver, details: { command } });
  const bad = unparsableString(command) ?? unparsableString(args);
  if (bad !== undefined) {
    throw new CairnError('INVALID_INPUT', `${command}: ${JSON.stringify(bad)} holds a lone surrogate or a Unicode noncharacter, which QMP cannot carry`, {
      driver,
      details: { command },
    });
  }
  let empty = command === 'block-dirty-bitmap-merge' && hasEmptyMerge(args);
  if (command === 'transaction') {
    const list = (args as { actions?: unknown } | undefined)?.actions;
    empty = Array.isArray(list) && list.some((a: { type?: unknown; data?: unknown }) => a?.type === 'block-dirty-bitmap-merge' && hasEmptyMerge(a.data));
  }
  if (empty) {
    throw new CairnError('INVALID_INPUT', `${command}: block-dirty-bitmap-merge needs at least one source bitmap`, {
      driver,
      details: { command },
    });
  }
}
