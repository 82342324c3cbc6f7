import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { firstDuplicateKey } from '../src/config/json-duplicate-key.js';
import { jsonErrorPosition } from '../src/config/json-position.js';
import { cairn, jsonError, removeDir, tempDir } from './helpers.js';

/** docs/cli.md, "Config": malformed YAML *or JSON* is INVALID_INPUT with the line and column in the message and in details. */
describe('malformed JSON config: line and column', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  const cases = [
    { name: 'token.json', body: '{\n  "version": 1,\n  "targets": }\n', line: 3, column: 14 },
    { name: 'end.json', body: '{ "targets": ', line: 1, column: 14 },
    { name: 'colon.json', body: '{\n  "version" 1\n}\n', line: 2, column: 13 },
    { name: 'trailing.json', body: '{"version": 1}\nx\n', line: 2, column: 1 },
  ];
  for (const c of cases) {
    it(`${c.name}: INVALID_INPUT (exit 2) with details {file, line, column} and the place in the message`, async () => {
      const file = join(cwd, c.name);
      await writeFile(file, c.body);
      const r = await cairn(['volume', 'list', '--config', file, '--json'], { cwd });
      expect(r.code, r.stderr).toBe(2);
      const err = jsonError(r);
      expect(err).toMatchObject({ code: 'INVALID_INPUT', details: { file, line: c.line, column: c.column } });
      expect(err.message).toContain(`line ${c.line}, column ${c.column}`);
    });
  }

  it('jsonErrorPosition finds nothing wrong in what JSON.parse accepts, and a place in what it refuses', () => {
    for (const ok of ['{}', ' [1, -0.5e+3, "a\\u00e9\\n", true, false, null, {"a": []}] ', '"x"', '0']) {
      expect(() => JSON.parse(ok)).not.toThrow();
      expect(jsonErrorPosition(ok), ok).toBeUndefined();
    }
    for (const bad of ['', '{', '[1,]', '{"a":1,}', '01', '"\\x"', '"a\tb"', 'tru', '1.', '-', '{"a" 1}', '[1] [2]', "{'a':1}"]) {
      expect(() => JSON.parse(bad), bad).toThrow();
      expect(jsonErrorPosition(bad), bad).toBeDefined();
    }
  });
});

describe('firstDuplicateKey', () => {
  it('finds the second setting of a key in one object, as JSON.parse decodes keys, and nothing else', () => {
    expect(firstDuplicateKey('{"a": 1,\n "b": {"a": 2},\n  "a": 3}')).toEqual({ key: 'a', line: 3, column: 3 });
    expect(firstDuplicateKey('{"a": 1, "\\u0061": 2}')).toMatchObject({ key: 'a', line: 1, column: 10 });
    expect(firstDuplicateKey('[{"a": 1}, {"a": 2}]')).toBeUndefined();
    expect(firstDuplicateKey('{"a": {"a": {"a": 1}}, "b": [{"b": 1}]}')).toBeUndefined();
    expect(firstDuplicateKey('{"x": [{"k": 1, "k": 2}]}')).toMatchObject({ key: 'k' });
    expect(firstDuplicateKey('"text"')).toBeUndefined();
    const deep = `${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`;
    expect(() => firstDuplicateKey(deep)).not.toThrow();
  });
});
