import { CairnError } from '@cairn/core';

/**
 * Deepest nesting of arrays and objects a request body may have (the top-level value is depth 1).
 * Every body of the API is a few levels deep; a deeper one is refused, so that nothing that walks
 * a body (validation, the answer's JSON) can overflow the stack.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * A request body's JSON text as data: every object in it has no prototype (`null`), so that each
 * key, `__proto__`, `constructor` and `prototype` included, is an own property like any other (a
 * volume metadata key may be any of them) and nothing a body holds can reach Object.prototype or
 * stand in for one of its members. Arrays stay arrays. A leading byte order mark is skipped.
 * Text that is not JSON is `INVALID_INPUT` (`details.reason: "malformed_json"`); JSON nested
 * deeper than MAX_JSON_DEPTH is `INVALID_INPUT` (`details.reason: "too_deeply_nested"`,
 * `details.maxDepth`).
 */
export function parseJsonBody(text: string): unknown {
  const source = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  let value: unknown;
  try {
    // JSON.parse (without a reviver, which recurses) defines each key as an own data property
    // (`__proto__` too: it never sets the prototype), at any depth.
    value = JSON.parse(source);
  } catch (err) {
    throw new CairnError('INVALID_INPUT', 'the request body is not valid JSON', { cause: err, details: { reason: 'malformed_json' } });
  }
  detachPrototypes(value);
  return value;
}

/** Detaches every object in `value` from Object.prototype, without recursion; refuses nesting deeper than MAX_JSON_DEPTH. */
function detachPrototypes(value: unknown): void {
  const stack: Array<{ value: unknown; depth: number }> = [{ value, depth: 1 }];
  while (stack.length > 0) {
    const { value: v, depth } = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > MAX_JSON_DEPTH) {
      throw new CairnError('INVALID_INPUT', `the request body is nested deeper than ${MAX_JSON_DEPTH} arrays and objects`, {
        details: { reason: 'too_deeply_nested', maxDepth: MAX_JSON_DEPTH },
      });
    }
    if (!Array.isArray(v)) Object.setPrototypeOf(v, null);
    for (const child of Object.values(v)) stack.push({ value: child, depth: depth + 1 });
  }
}
