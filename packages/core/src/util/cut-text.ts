/**
 * Bounds what a message echoes of text a user or a file supplied (an id, a name, a metadata key):
 * 100 KB of it would bury the message. Lengths and cuts count code points, so a character is never
 * split (no lone surrogate is shown).
 */

/** The text shown and, when it was cut, the whole text's length in code points. */
function cut(text: string, max: number): { head: string; length?: number } {
  if (text.length <= max) return { head: text }; // UTF-16 units ≥ code points: nothing to count
  const points = [...text];
  return points.length > max ? { head: points.slice(0, max).join(''), length: points.length } : { head: text };
}

const note = (length: number | undefined): string => (length === undefined ? '' : `… (${length} characters)`);

/**
 * `text` when it has at most `max` code points; otherwise its first `max`, followed by
 * `… (<n> characters)`, n being its whole length.
 */
export function cutText(text: string, max: number): string {
  const { head, length } = cut(text, max);
  return `${head}${note(length)}`;
}

/**
 * `text` as a JSON string literal (quoted, control characters escaped, and the other characters
 * escapedText escapes too, as `\uXXXX`), cut as cutText cuts it;
 * the note `… (<n> characters)` follows the closing quote: `"abc"… (300 characters)`.
 */
export function quotedCut(text: string, max: number): string {
  const { head, length } = cut(text, max);
  // JSON escapes C0 controls; escapedText then escapes what JSON leaves raw (DEL, C1, U+2028/2029,
  // bidi controls), never a character twice (JSON's escapes are plain backslashes and letters).
  return `${escapedText(JSON.stringify(head))}${note(length)}`;
}

/**
 * Characters that could forge a line or reorder what a terminal or a log viewer shows: C0 controls
 * (U+0000–U+001F: line feed, carriage return, ESC…), DEL (U+007F), C1 controls (U+0080–U+009F),
 * the separators U+2028 and U+2029, the bidi embeddings, overrides and isolates U+202A–U+202E and
 * U+2066–U+2069, the bidi marks U+061C, U+200E and U+200F, and the invisible U+FEFF (the set the
 * CLI's terminal-text.ts escapes at display).
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/gu;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * `text` with each character listed above escaped as JSON writes it: `\n`, `\r`, `\t` as those two
 * characters, every other one as `\uXXXX` (lower-case hex). Nothing else changes (backslashes
 * included) and no quotes are added: for free text a message shows as it is (a peer's error
 * message), which then stays on its line in a log, an API response or a terminal. `keep`, when
 * given, may keep a character at its offset in `text` as it is (a line feed a layout meant).
 */
export function escapedText(text: string, keep?: (char: string, offset: number) => boolean): string {
  return text.replace(UNSAFE, (c: string, offset: number) => (keep?.(c, offset) ? c : (NAMED[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)));
}

/**
 * `text` cut as cutText cuts it (the first `max` code points of the text as given, the note naming
 * its whole length), then escaped as escapedText escapes it, without quotes. So the note still
 * counts the text's own characters (a line feed counts one, though it shows as two).
 */
export function escapedCut(text: string, max: number): string {
  const { head, length } = cut(text, max);
  return `${escapedText(head)}${note(length)}`;
}
