import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Alias, type Node } from 'yaml';

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

/** A problem of the text, at its offset. */
class TextProblem extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

/**
 * Parses `text` as one YAML document into plain values, or says what is wrong with it: a syntax
 * error, several documents, a duplicated key, an alias naming no anchor, more than
 * MAX_YAML_ALIASES aliases (at the first one too many), a merge key (`<<`) whose value is not a
 * map or a sequence of maps, a key that is a collection. Every problem of the text itself carries
 * its line and column; the message is one line and ends with them (`at line L, column C`).
 *
 * Merge keys (YAML 1.1 `<<: *base` or `<<: [*a, *b]`, a plain `<<` only; a quoted `"<<"` is an
 * ordinary key) are expanded: the map gets each key of the merged maps that it does not set
 * itself, the earlier of several merged maps winning. An alias shares its anchor's value (no copy
 * is made). Work is linear in the text: every node is converted once, an alias costs one lookup,
 * and a merge one copy of its source's keys (at most MAX_YAML_ALIASES merges go through aliases).
 */
export function parseYamlDocument(text: string): { value: unknown } | { problem: YamlProblem } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, merge: true });
  const error = doc.errors[0];
  if (error) return { problem: { message: withoutExcerpt(error.message), line: error.linePos?.[0].line, column: error.linePos?.[0].col } };
  try {
    return { value: toPlain(doc.contents, aliasTargets(doc)) };
  } catch (err) {
    if (!(err instanceof TextProblem)) return { problem: { message: (err as Error).message } }; // a RangeError: nested deeper than the stack allows
    const { line, col } = lines.linePos(err.offset);
    return { problem: { message: `${err.message} at line ${line}, column ${col}`, line, column: col } };
  }
}

/**
 * The first line of a parser's message, without the excerpt of the text it appends after a colon
 * (`… at line 2, column 1:` then the lines around it and a caret): a message is one line (docs/cli.md,
 * errors), the place is already in it, and the excerpt could show a config's secrets.
 */
function withoutExcerpt(message: string): string {
  const first = message.trimEnd().split('\n', 1)[0]!;
  return first.endsWith(':') ? first.slice(0, -1) : first;
}

/**
 * Each alias's anchor: the last node before it with that anchor (one walk in document order).
 * `TextProblem` for an alias naming no anchor before it, and at the alias past MAX_YAML_ALIASES.
 */
function aliasTargets(doc: ReturnType<typeof parseDocument>): Map<Alias, Node> {
  const anchors = new Map<string, Node>();
  const targets = new Map<Alias, Node>();
  visit(doc, {
    Node(_key, node) {
      if (!isAlias(node)) {
        if (node.anchor) anchors.set(node.anchor, node);
        return;
      }
      const offset = node.range?.[0] ?? 0;
      if (targets.size >= MAX_YAML_ALIASES) throw new TextProblem(`more than ${MAX_YAML_ALIASES} aliases (*${node.source}): a config needs few`, offset);
      const target = anchors.get(node.source);
      if (target === undefined) throw new TextProblem(`alias *${node.source} names no anchor defined before it`, offset);
      targets.set(node, target);
    },
  });
  return targets;
}

/**
 * The plain value of `root`: objects, arrays and scalars. Each node is converted once (`done`):
 * an alias gets its anchor's value, which is registered before its contents are converted (so an
 * alias inside its own anchor gets it too). A map's merges are applied once its own keys are set.
 */
function toPlain(root: unknown, targets: Map<Alias, Node>): unknown {
  const done = new Map<unknown, unknown>();
  const convert = (node: unknown): unknown => {
    if (isAlias(node)) return done.get(targets.get(node));
    if (isScalar(node)) return node.value;
    if (isSeq(node)) {
      const out: unknown[] = [];
      done.set(node, out);
      for (const item of node.items) out.push(convert(item));
      return out;
    }
    if (isMap(node)) {
      const out: Record<string, unknown> = {};
      done.set(node, out);
      const merges: { sources: unknown; offset: number }[] = [];
      for (const pair of node.items) {
        if (!isPair(pair)) continue;
        const offset = (pair.key as Node | null)?.range?.[0] ?? node.range?.[0] ?? 0;
        if (isScalar(pair.key) && typeof pair.key.value === 'symbol') {
          merges.push({ sources: convert(pair.value), offset });
          continue;
        }
        const key = convert(pair.key);
        if (key !== null && typeof key === 'object') throw new TextProblem('a key is a map or a sequence: a config has only plain keys', offset);
        define(out, key === null || key === undefined ? '' : String(key), convert(pair.value));
      }
      for (const { sources, offset } of merges) {
        for (const source of Array.isArray(sources) ? sources : [sources]) {
          if (source === null || typeof source !== 'object' || Array.isArray(source)) throw new TextProblem('a merge key (<<) takes a map or a sequence of maps', offset);
          for (const [k, v] of Object.entries(source)) if (!Object.hasOwn(out, k)) define(out, k, v);
        }
      }
      return out;
    }
    return node ?? null; // an empty document
  };
  return convert(root);
}

/** Sets an own property, even one named `__proto__`. */
function define(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
}
