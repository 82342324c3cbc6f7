/**
 * Excerpts of what a QMP peer sent, for error messages and `details`.
 *
 * A peer controls the shape of what it sends: JSON.parse reads any nesting depth (it is
 * iterative), but JSON.stringify recurses and throws a RangeError on a value nested a few
 * thousand levels deep. Code that runs in the socket's data handler must not throw, so it
 * describes received values only through `receivedExcerpt`.
 */

/** Longest excerpt kept by default, in UTF-16 code units. */
export const RECEIVED_EXCERPT_CHARS = 200;

/**
 * The JSON text of `value`, cut to `max` characters; for a value JSON.stringify cannot write
 * (nested too deep), a placeholder naming its type (`[…]`, `{…}`). Never throws.
 */
export function receivedExcerpt(value: unknown, max: number = RECEIVED_EXCERPT_CHARS): string {
  try {
    const text = JSON.stringify(value);
    return (text ?? String(value)).slice(0, max);
  } catch {
    if (Array.isArray(value)) return '[…]';
    return typeof value === 'object' && value !== null ? '{…}' : typeof value;
  }
}
