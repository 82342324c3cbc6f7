import { CairnError } from '@cairn/core';

/**
 * A request body's JSON text as data: every object in it has no prototype (`null`), so that each
 * key, `__proto__`, `constructor` and `prototype` included, is an own property like any other (a
 * volume metadata key may be any of them) and nothing a body holds can reach Object.prototype or
 * stand in for one of its members. Arrays stay arrays. A leading byte order mark is skipped.
 * Text that is not JSON is `INVALID_INPUT`.
 */
export function parseJsonBody(text: string): unknown {
  const source = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  try {
    // JSON.parse defines each key as an own data property (`__proto__` too: it never sets the
    // prototype); the reviver then detaches each object it made from Object.prototype.
    return JSON.parse(source, (_key, value: unknown) => (typeof value === 'object' && value !== null && !Array.isArray(value) ? Object.setPrototypeOf(value, null) : value));
  } catch (err) {
    throw new CairnError('INVALID_INPUT', 'the request body is not valid JSON', { cause: err, details: { reason: 'malformed_json' } });
  }
}
