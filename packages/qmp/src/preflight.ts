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
 */
import { CairnError } from '@cairn/core';

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

/**
 * Throws INVALID_INPUT when `command` with `args` would crash the daemon or could not be parsed
 * by it (see the file comment), so nothing is sent. No I/O.
 */
export function assertSafeCommand(command: string, args: unknown, driver: string): void {
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
