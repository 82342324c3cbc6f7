import { parse, type ParseError } from 'jsonc-parser';

/**
 * Where JSON text stops being valid JSON, as a 1-based line and column, for a text JSON.parse
 * refused: Node 20's messages often give no position at all ("Unexpected token '}', "…" is not
 * valid JSON"). The place is the first error of jsonc-parser's strict parse (no comments, no
 * trailing commas): the start of the token where the text goes wrong, or its end for an
 * unexpected end. The column counts UTF-16 code units from the line's start. `undefined` when that
 * parse finds no error (JSON.parse stays the judge of validity: a text it accepted has none), and
 * when the text nests deeper than that recursive parse can go (`[` a million times): never throws.
 */
export function jsonErrorPosition(text: string): { line: number; column: number } | undefined {
  const errors: ParseError[] = [];
  try {
    parse(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
  } catch {
    return undefined; // RangeError: the call stack is exhausted; the error keeps JSON.parse's message
  }
  const offset = errors[0]?.offset;
  if (offset === undefined) return undefined;
  const before = text.slice(0, offset);
  const lineStart = before.lastIndexOf('\n') + 1;
  return { line: before.split('\n').length, column: offset - lineStart + 1 };
}
