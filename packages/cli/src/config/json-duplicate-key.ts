import { visit } from 'jsonc-parser';

/** A key that an object of a JSON text sets twice, at its second setting (1-based line and column). */
export interface DuplicateKey {
  key: string;
  line: number;
  column: number;
}

/**
 * The first key that an object of `text` sets a second time, or `undefined` when none does. For
 * a text JSON.parse accepted: JSON.parse keeps the last of two settings and drops the first
 * without a word, so a config with two `"targets"` would lose one silently (YAML configs refuse a
 * duplicated key: the parser does). Keys compare as JSON.parse decodes them (`"a"` and `"\u0061"`
 * are one key). Line and column are those of the second key's opening quote; the column counts
 * UTF-16 code units from the line's start. `undefined` too when the text nests deeper than the
 * recursive walk can go (then JSON.parse's value stands): never throws.
 */
export function firstDuplicateKey(text: string): DuplicateKey | undefined {
  /** The keys seen so far in each object being walked, innermost last. */
  const open: Set<string>[] = [];
  let found: DuplicateKey | undefined;
  try {
    visit(
      text,
      {
        onObjectBegin: () => void open.push(new Set()),
        onObjectEnd: () => void open.pop(),
        onObjectProperty: (key, _offset, _length, startLine, startCharacter) => {
          const keys = open.at(-1);
          if (found || !keys) return;
          if (keys.has(key)) found = { key, line: startLine + 1, column: startCharacter + 1 };
          keys.add(key);
        },
      },
      { disallowComments: true, allowTrailingComma: false },
    );
  } catch {
    return undefined; // RangeError: the call stack is exhausted
  }
  return found;
}
