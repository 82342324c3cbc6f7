import { escapedText } from '@cairn/core';

/**
 * How text mode shows text a user or a file supplied (an id, a name, a metadata key or value, a
 * path, a message echoing them) on a terminal: characters that could forge a line or reorder what
 * the terminal shows are escaped, so the text stays on its line and reads as it is stored. `--json`
 * output never goes through here: its data is shown exactly (JSON escapes what it must).
 *
 * Escaped: what core's escapedText escapes — C0 controls (U+0000–U+001F: line feed, carriage
 * return, ESC…), DEL (U+007F), C1 controls (U+0080–U+009F), the line and paragraph separators
 * U+2028 and U+2029, the bidi embeddings, overrides and isolates U+202A–U+202E and
 * U+2066–U+2069, the bidi marks U+061C, U+200E and U+200F, and U+FEFF. `\n`, `\r` and `\t` are
 * shown as those two characters, every other one as `\uXXXX` (lower-case hex), as JSON writes them.
 * Other text, backslashes included, is shown unchanged.
 */

/** `text` for one line of a terminal: every character listed above escaped, line feeds included. */
export function shownText(text: string): string {
  return escapedText(text);
}

/**
 * Text Cairn laid out in lines (a table, `key: value` fields), whose echoed parts went through
 * shownText: every character listed above escaped except the line feeds. A net for an echoed part
 * that missed shownText: it may still break a line, but can no longer move the cursor, clear the
 * screen or reorder text.
 */
export function shownLines(text: string): string {
  return escapedText(text, (c) => c === '\n');
}

/**
 * A message (an error's, a warning, an informational line) that may echo user text anywhere in
 * it. A message breaks its line on purpose only to list items on indented lines (`\n  `, as a
 * config error lists its problems); every other line feed, and every other character listed
 * above, is escaped. So no echoed text starts a line of its own at column 0: every such line on
 * stderr is one Cairn began (`error [CODE]: `, `warning: `, `hint: `…).
 */
export function shownMessage(text: string): string {
  return escapedText(text, (c, offset) => c === '\n' && text.startsWith('  ', offset + 1));
}
