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
 * `text` as a JSON string literal (quoted, control characters escaped), cut as cutText cuts it;
 * the note `… (<n> characters)` follows the closing quote: `"abc"… (300 characters)`.
 */
export function quotedCut(text: string, max: number): string {
  const { head, length } = cut(text, max);
  return `${JSON.stringify(head)}${note(length)}`;
}
