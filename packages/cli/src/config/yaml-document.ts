import { LineCounter, parseDocument, visit } from 'yaml';

/** Why a YAML text is not one well-formed document, and where (1-based), when the parser knows. */
export interface YamlProblem {
  message: string;
  line?: number;
  column?: number;
}

/**
 * Parses `text` as one YAML document into plain values, or says what is wrong with it: a syntax
 * error, several documents, a duplicated key, an alias naming no anchor (the parser itself finds
 * that one only while converting, without a place: it is located here). Every problem of the
 * text itself carries its line and column; the message ends with them (`at line L, column C`)
 * and, for syntax errors, the parser's excerpt of the text.
 */
export function parseYamlDocument(text: string): { value: unknown } | { problem: YamlProblem } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const error = doc.errors[0];
  if (error) return { problem: { message: error.message.trimEnd(), line: error.linePos?.[0].line, column: error.linePos?.[0].col } };
  let unresolved: { source: string; offset: number } | undefined;
  visit(doc, {
    Alias(_key, alias) {
      if (alias.resolve(doc) !== undefined) return undefined;
      unresolved = { source: alias.source, offset: alias.range?.[0] ?? 0 };
      return visit.BREAK;
    },
  });
  if (unresolved) {
    const { line, col } = lines.linePos(unresolved.offset);
    return { problem: { message: `alias *${unresolved.source} names no anchor defined before it at line ${line}, column ${col}`, line, column: col } };
  }
  try {
    return { value: doc.toJS() };
  } catch (err) {
    return { problem: { message: (err as Error).message } }; // e.g. too many aliases: a property of the whole document
  }
}
