import { CairnError } from '../errors.js';
import type { ByteRange } from '../contracts/block-device.js';
import { quotedCut } from './cut-text.js';

/** Throws INVALID_INPUT unless `size` is a positive safe integer multiple of 512. */
export function assertVolumeSize(size: unknown, driver?: string): asserts size is number {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
    throw new CairnError('INVALID_INPUT', `volume size must be a positive multiple of 512 bytes, got ${String(size)}`, {
      driver,
      details: { size },
    });
  }
}

/**
 * Throws INVALID_INPUT unless `[offset, offset+length)` lies inside `[0, size)`; the message names
 * `what` the range is of (default `the device`; an object store passes the object).
 */
export function assertRange(offset: number, length: number, size: number, driver?: string, what = 'the device'): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new CairnError('INVALID_INPUT', `range [${offset}, +${length}) is outside ${what} of ${size} bytes`, {
      driver,
      details: { offset, length, size },
    });
  }
}

/** Returns `range` or the whole `[0,size)`, checked. */
export function resolveRange(range: ByteRange | undefined, size: number, driver?: string): ByteRange {
  const r = range ?? { offset: 0, length: size };
  assertRange(r.offset, r.length, size, driver);
  return r;
}

/** Throws INVALID_INPUT unless `id` is a non-empty string of safe characters. */
export function assertId(id: unknown, what: string, driver?: string): asserts id is string {
  if (typeof id !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/.test(id)) {
    throw new CairnError('INVALID_INPUT', `${what} id is malformed: ${JSON.stringify(id)}`, { driver });
  }
}

/**
 * Longest volume id, in bytes of its UTF-8 encoding. A repository keys a volume's backups by the
 * id in hex (`catalog/by-volume/<hex>/`, two characters a byte), and the posix store takes key
 * segments of at most 255 bytes (a file name): 127 bytes is the most every store takes.
 */
export const MAX_VOLUME_ID_BYTES = 127;

/** A volume id's characters: a letter or digit, then letters, digits, `.`, `_`, `:` or `-`. */
const VOLUME_ID_CHARACTERS = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;

/**
 * The one rule for a volume id, wherever one enters (an archive's record, the REST API, the CLI,
 * a record the repository catalog keys): `INVALID_INPUT` naming `field` (`details: { field,
 * reason, ... }`, `reason` one of `not_string`, `empty`, `too_long` (with `bytes` and `max`),
 * `characters`) unless `id` is a string of 1 to MAX_VOLUME_ID_BYTES bytes of UTF-8 made of
 * VOLUME_ID_CHARACTERS. With `anyCharacters` only the length is checked: what the catalog needs
 * of the ids a volume driver gives (the catalog hex-encodes them, so any characters key). The
 * message quotes at most 80 characters of the id.
 */
export function assertVolumeId(id: unknown, field = 'volumeId', driver?: string, options: { anyCharacters?: boolean } = {}): asserts id is string {
  const fail = (reason: string, rule: string, extra: Record<string, unknown> = {}): never => {
    const shown = typeof id === 'string' ? `volume id ${quotedCut(id, 80)}` : `volume id (${typeof id})`;
    throw new CairnError('INVALID_INPUT', `${field}: ${shown} is malformed: ${rule}`, { driver, details: { field, reason, ...extra } });
  };
  const rule = options.anyCharacters
    ? `a volume id is 1 to ${MAX_VOLUME_ID_BYTES} bytes (UTF-8)`
    : `a volume id is 1 to ${MAX_VOLUME_ID_BYTES} bytes of letters, digits, '.', '_', ':' or '-', starting with a letter or digit`;
  if (typeof id !== 'string') return fail('not_string', rule);
  if (id === '') return fail('empty', rule);
  const bytes = Buffer.byteLength(id, 'utf8');
  if (bytes > MAX_VOLUME_ID_BYTES) fail('too_long', `${rule}; this one is ${bytes}`, { bytes, max: MAX_VOLUME_ID_BYTES });
  if (!options.anyCharacters && !VOLUME_ID_CHARACTERS.test(id)) fail('characters', rule);
}

const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Throws INVALID_INPUT unless `key` is a valid object-store key (see ObjectStore). */
export function assertObjectKey(key: unknown, driver?: string): asserts key is string {
  const ok =
    typeof key === 'string' &&
    key.length > 0 &&
    Buffer.byteLength(key) <= 1024 &&
    key.split('/').every((s) => KEY_SEGMENT.test(s) && s !== '.' && s !== '..');
  if (!ok) throw new CairnError('INVALID_INPUT', `object key is malformed: ${JSON.stringify(key)}`, { driver });
}

/** Throws INVALID_INPUT unless `prefix` is empty or a valid key prefix (may end with `/`). */
export function assertObjectPrefix(prefix: unknown, driver?: string): asserts prefix is string {
  if (prefix === '') return;
  if (typeof prefix !== 'string') throw new CairnError('INVALID_INPUT', 'object prefix must be a string', { driver });
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  assertObjectKey(trimmed, driver);
}

/** Longest display name or description, in code points (Cinder's limit). */
export const MAX_DISPLAY_TEXT = 255;

/** C0 and C1 control characters (U+0000–U+001F, U+007F–U+009F). */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;
/** The same, except tab and newline. */
const CONTROL_BUT_TAB_NEWLINE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/u;

function assertDisplayText(value: unknown, field: string, driver: string | undefined, multiline: boolean): asserts value is string {
  const fail = (reason: string, message: string, extra: Record<string, unknown> = {}): never => {
    throw new CairnError('INVALID_INPUT', `${field} ${message}`, { driver, details: { field, reason, ...extra } });
  };
  if (typeof value !== 'string') fail('not_string', 'must be a string');
  const text = value as string;
  const length = [...text].length;
  if (length > MAX_DISPLAY_TEXT) fail('too_long', `must be at most ${MAX_DISPLAY_TEXT} characters, got ${length}`, { length, max: MAX_DISPLAY_TEXT });
  const codePoint = controlCharacterIn(text, multiline);
  if (codePoint) fail('control_character', `must not contain control characters, found ${codePoint}`, { codePoint });
}

/**
 * The first C0 or C1 control character (U+0000–U+001F, U+007F–U+009F) in `text`, as `U+XXXX`;
 * tab and newline are let through when `tabNewline`. Undefined when there is none.
 */
export function controlCharacterIn(text: string, tabNewline = false): string | undefined {
  const control = (tabNewline ? CONTROL_BUT_TAB_NEWLINE : CONTROL).exec(text);
  return control ? `U+${control[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}` : undefined;
}

/**
 * Throws INVALID_INPUT (details `{ field, reason, ... }`, `reason` one of `not_string`, `empty`,
 * `too_long`, `control_character`) unless `value` is a name a user gave to
 * a volume or backup: a non-empty string of at most 255 code points with no C0/C1 control
 * character (so no newline or tab). An empty name is refused: omit the name to have none.
 */
export function assertDisplayName(value: unknown, field: string, driver?: string): asserts value is string {
  assertDisplayText(value, field, driver, false);
  if (value === '') {
    throw new CairnError('INVALID_INPUT', `${field} must not be empty (omit it to give none)`, { driver, details: { field, reason: 'empty' } });
  }
}

/**
 * Throws INVALID_INPUT as assertDisplayName does, unless `value` is a name as a record stores it:
 * a display name, or `''` for none given (what imported documents and archives carry).
 */
export function assertStoredName(value: unknown, field: string, driver?: string): asserts value is string {
  if (value !== '') assertDisplayName(value, field, driver);
}

/**
 * Throws INVALID_INPUT (details `{ field, reason, ... }`) unless `value` is a description: a
 * string (may be empty) of at most 255 code points with no C0/C1 control character other than
 * newline (U+000A) and tab (U+0009), which descriptions may hold.
 */
export function assertDescription(value: unknown, field: string, driver?: string): asserts value is string {
  assertDisplayText(value, field, driver, true);
}

/**
 * Throws INVALID_INPUT (details `{ field, reason }`, `reason` `not_object` or `not_string`, with
 * `key` for the latter) unless `value` is volume metadata: a plain object (one whose prototype is
 * Object.prototype or null: not null, an array, a Map or another class's instance) mapping keys to
 * string values. The one rule for a volume's key/value metadata, at its creation
 * (VolumeDriver.createVolume) and when it is replaced (VolumeDriver.setVolumeMetadata).
 */
export function assertVolumeMetadata(value: unknown, field: string, driver?: string): asserts value is Record<string, string> {
  // Plain: made by `{}` or JSON.parse (or with no prototype). A Map, a Date or a class instance
  // would pass for one whose entries (none of its own) are then lost without a word.
  const proto: unknown = typeof value === 'object' && value !== null ? Object.getPrototypeOf(value) : undefined;
  if (typeof value !== 'object' || value === null || (proto !== Object.prototype && proto !== null)) {
    throw new CairnError('INVALID_INPUT', `${field}: volume metadata must map strings to strings`, { driver, details: { field, reason: 'not_object' } });
  }
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string') {
      throw new CairnError('INVALID_INPUT', `${field}: volume metadata must map strings to strings (${JSON.stringify(key)} is not a string)`, {
        driver,
        details: { field, reason: 'not_string', key },
      });
    }
  }
}

/**
 * `INVALID_INPUT` (`details.field: 'signal'`) unless `signal` is undefined or an AbortSignal (by
 * its shape: `aborted`, `addEventListener`, `removeEventListener`). A request's signal is checked
 * before anything is taken or written for it (a backup's record and its turn, a restore's claim):
 * linking it to the job later must not fail.
 */
export function assertSignal(signal: unknown): asserts signal is AbortSignal | undefined {
  if (signal === undefined) return;
  const s = signal as Partial<AbortSignal> | null;
  if (typeof s !== 'object' || s === null || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function' || typeof s.removeEventListener !== 'function') {
    throw new CairnError('INVALID_INPUT', 'signal must be an AbortSignal', { details: { field: 'signal', reason: 'not_abort_signal' } });
  }
}
