import { isAlias, LineCounter, parseDocument, visit, type Node } from 'yaml';

/** Why a YAML text is not one well-formed document, and where (1-based), when the parser knows. */
export interface YamlProblem {
  message: string;
  line?: number;
  column?: number;
}

/**
 * The most aliases (`*name`) a config may hold. A config shares a few option blocks at most; a
 * document of many aliases costs the parser's conversion time that grows faster than the text
 * (each alias was located by a walk of the whole document: 20,000 aliases in 60 KB took 42 s),
 * and the parser's own bound (100 expansions) does not count aliases of an empty collection.
 */
export const MAX_YAML_ALIASES = 100;

/**
 * Parses `text` as one YAML document into plain values, or says what is wrong with it: a syntax
 * error, several documents, a duplicated key, an alias naming no anchor (the parser itself finds
 * that one only while converting, without a place: it is located here), more than
 * MAX_YAML_ALIASES aliases (at the first one too many). Every problem of the text itself carries
 * its line and column; the message ends with them (`at line L, column C`) and, for syntax errors,
 * the parser's excerpt of the text. Work is linear in the text but for the conversion of aliases,
 * which MAX_YAML_ALIASES bounds; an alias shares its anchor's value (no copy is made).
 */
export function parseYamlDocument(text: string): { value: unknown } | { problem: YamlProblem } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const error = doc.errors[0];
  if (error) return { problem: { message: error.message.trimEnd(), line: error.linePos?.[0].line, column: error.linePos?.[0].col } };
  // One walk in document order finds each alias's anchor: the last node before it with that
  // anchor, as the parser's Alias.resolve says, which walks the whole document on every call.
  const anchors = new Map<string, Node>();
  let aliases = 0;
  let problem: { message: string; offset: number } | undefined;
  visit(doc, {
    Node(_key, node) {
      if (!isAlias(node) && node.anchor) anchors.set(node.anchor, node);
      if (!isAlias(node)) return undefined;
      const alias = node;
      const offset = alias.range?.[0] ?? 0;
      if (++aliases > MAX_YAML_ALIASES) {
        problem = { message: `more than ${MAX_YAML_ALIASES} aliases (*${alias.source}): a config needs few`, offset };
        return visit.BREAK;
      }
      const target = anchors.get(alias.source);
      if (target === undefined) {
        problem = { message: `alias *${alias.source} names no anchor defined before it`, offset };
        return visit.BREAK;
      }
      // The conversion below resolves aliases again, some by that whole-document walk (the
      // parser's expansion count): it gets the anchor found here at once.
      Object.defineProperty(alias, 'resolve', { value: () => target });
      return undefined;
    },
  });
  if (problem) {
    const { line, col } = lines.linePos(problem.offset);
    return { problem: { message: `${problem.message} at line ${line}, column ${col}`, line, column: col } };
  }
  try {
    return { value: doc.toJS() };
  } catch (err) {
    return { problem: { message: (err as Error).message } }; // e.g. too many expansions: a property of the whole document
  }
}
