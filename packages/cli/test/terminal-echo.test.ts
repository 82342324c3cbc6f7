import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shownLines, shownMessage, shownText } from '../src/output/terminal-text.js';
import { cairn, cairnJson, jsonError, removeDir, tempDir } from './helpers.js';

/**
 * Text mode shows echoed user text (ids, names, metadata) with control characters, line
 * separators and bidi overrides escaped, so it cannot forge a line (`error [OK]: …`), clear the
 * screen or reorder what the terminal shows; `--json` carries the data unaltered.
 */
describe('echoed text in text mode', () => {
  // A line feed and carriage return, ESC clearing the screen, a line separator, a right-to-left override.
  const evil = 'a\nerror [OK]: fake\r\x1b[2J\u2028\u202eq';
  const shown = 'a\\nerror [OK]: fake\\r\\u001b[2J\\u2028\\u202eq';
  // Names refuse control characters (INVALID_INPUT), not the separators and overrides.
  const evilName = 'disk\u2028\u202eq';
  const shownName = 'disk\\u2028\\u202eq';
  let cwd: string;
  beforeAll(async () => {
    cwd = await tempDir();
    await cairnJson(['volume', 'create', evilName, '--size', '1MiB', '--metadata', `k=${evil}`], { cwd });
    await cairnJson(['backup', 'create', evilName, '--name', evilName], { cwd });
  });
  afterAll(() => removeDir(cwd));

  /** No character the helpers escape in `text`, line feeds apart. */
  const clean = (text: string) => expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u);

  it('shownText escapes C0, DEL, C1, U+2028/U+2029 and the bidi controls, and leaves other text alone', () => {
    expect(shownText(evil)).toBe(shown);
    expect(shownText('\u0000\t\u007f\u0085\u009b\u2029\u202a\u2066\u2069')).toBe('\\u0000\\t\\u007f\\u0085\\u009b\\u2029\\u202a\\u2066\\u2069');
    expect(shownText('plain é 😀 \\n')).toBe('plain é 😀 \\n');
    expect(shownLines('a\nb\x1b[2J\u202e')).toBe('a\nb\\u001b[2J\\u202e');
  });

  it('shownMessage keeps only line feeds that start an indented line (a config error listing its problems)', () => {
    expect(shownMessage('invalid config\n  f: a: bad\n  f: b: bad')).toBe('invalid config\n  f: a: bad\n  f: b: bad');
    expect(shownMessage(`backup ${evil} not found`)).toBe(`backup ${shown} not found`);
    expect(shownMessage('a\n error')).toBe('a\\n error');
  });

  const errors: [string[], string][] = [
    [['backup', 'show', evil], 'NOT_FOUND'],
    [['volume', 'show', evil], 'NOT_FOUND'],
    [['volume', 'metadata', evil, 'show'], 'NOT_FOUND'],
  ];
  for (const [args, code] of errors) {
    it(`${args.slice(0, 2).join(' ')} of an id with control characters: one error line echoing it escaped; --json echoes it whole`, async () => {
      const text = await cairn(args, { cwd });
      expect(text.code).toBe(3);
      const lines = text.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('warning: the cairn bundle'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^error \\[${code}\\]: `));
      expect(lines[0]).toContain(shown);
      clean(text.stderr);
      const json = await cairn([...args, '--json'], { cwd });
      expect(jsonError(json).code).toBe(code);
      expect(jsonError(json).message).toContain(evil);
    });
  }

  it('volume list and volume show: a name and a metadata value shown escaped; --json unaltered', async () => {
    const list = await cairn(['volume', 'list'], { cwd });
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(shownName);
    expect(list.stdout.trimEnd().split('\n')).toHaveLength(2); // header and one row
    clean(list.stdout);
    const show = await cairn(['volume', 'show', evilName], { cwd });
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(`name:     ${shownName}\n`);
    expect(show.stdout).toContain(`metadata: k=${shown}\n`);
    clean(show.stdout);
    const meta = await cairn(['volume', 'metadata', evilName, 'show'], { cwd });
    expect(meta.stdout).toContain(shown);
    clean(meta.stdout);
    const [v] = await cairnJson(['volume', 'list'], { cwd });
    expect(v.name).toBe(evilName);
    expect(v.metadata.k).toBe(evil);
    expect((await cairnJson(['volume', 'show', evilName], { cwd })).metadata.k).toBe(evil);
    expect((await cairnJson(['volume', 'metadata', evilName, 'show'], { cwd })).metadata.k).toBe(evil);
  });

  it('backup list and backup show: names shown escaped; --json unaltered', async () => {
    const [b] = await cairnJson(['backup', 'list'], { cwd });
    expect(b.name).toBe(evilName);
    expect(b.volumeName).toBe(evilName);
    const list = await cairn(['backup', 'list'], { cwd });
    expect(list.stdout.trimEnd().split('\n')).toHaveLength(2);
    expect(list.stdout).toContain(`${b.id}  ${shownName}  ${shownName}  full`);
    clean(list.stdout);
    const show = await cairn(['backup', 'show', b.id], { cwd });
    expect(show.stdout).toContain(`name:         ${shownName}\n`);
    expect(show.stdout).toContain(`volume:       ${shownName} (${b.volumeId})\n`);
    clean(show.stdout);
    expect((await cairnJson(['backup', 'show', b.id], { cwd })).name).toBe(evilName);
  });
});
