import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cutLongRuns, MAX_ECHO } from '../src/output/echo.js';
import { cairn, cairnJson, jsonError, removeDir, tempDir } from './helpers.js';

/**
 * An error that echoes text the user supplied (an id on the command line, a name in a config)
 * shows at most MAX_ECHO characters of it and says how long it was: a 100 KB id must not make a
 * 100 KB message.
 */
describe('errors echoing long user text', () => {
  let cwd: string;
  const long = 'a'.repeat(100_000);
  beforeAll(async () => {
    cwd = await tempDir();
    await cairnJson(['volume', 'create', 'disk', '--size', '1MiB'], { cwd });
  });
  afterAll(() => removeDir(cwd));

  it('cutLongRuns cuts only runs longer than the bound, noting their length in characters (code points)', () => {
    expect(cutLongRuns('backup abc is missing')).toBe('backup abc is missing');
    expect(cutLongRuns(`x ${'b'.repeat(MAX_ECHO)} y`)).toBe(`x ${'b'.repeat(MAX_ECHO)} y`);
    expect(cutLongRuns(`no backup ${'é'.repeat(MAX_ECHO + 1)} here`)).toBe(`no backup ${'é'.repeat(MAX_ECHO)}… (${MAX_ECHO + 1} characters) here`);
    expect(cutLongRuns(`${'\u{1F600}'.repeat(3)}`, 2)).toBe(`${'\u{1F600}'.repeat(2)}… (3 characters)`);
  });

  // backup delete and backup list --volume turn the id into an object key first, which the store
  // refuses as malformed (INVALID_INPUT) before anything is looked up.
  const cases: [string[], string, number][] = [
    [['backup', 'show', long], 'NOT_FOUND', 3],
    [['volume', 'show', long], 'NOT_FOUND', 3],
    [['backup', 'delete', long], 'INVALID_INPUT', 2],
    [['backup', 'list', '--volume', long], 'INVALID_INPUT', 2],
  ];
  for (const [args, code, exit] of cases) {
    it(`${args.slice(0, 2).join(' ')} with a 100 000-character id: ${code}, the message showing a bounded part of it and its length (text and --json)`, async () => {
      const text = await cairn(args, { cwd });
      expect(text.code).toBe(exit);
      const line = text.stderr.split('\n').find((l) => l.startsWith('error ['))!;
      expect(line.length).toBeLessThan(2 * MAX_ECHO);
      expect(line).toMatch(new RegExp(`^error \\[${code}\\]: .*… \\(\\d{6} characters\\)`));
      const json = await cairn([...args, '--json'], { cwd });
      expect(json.code).toBe(exit);
      expect(jsonError(json).code).toBe(code);
      expect(jsonError(json).message.length).toBeLessThan(2 * MAX_ECHO);
      expect(jsonError(json).message).toMatch(/… \(\d{6} characters\)/);
    });
  }

  it('a config naming a 100 000-character default volume driver: INVALID_INPUT whose message is bounded', async () => {
    const config = join(cwd, 'long.json');
    await writeFile(
      config,
      JSON.stringify({
        volumeDrivers: { [long]: { plugin: 'file', options: { directory: 'v' } } },
        targets: { posix: { plugin: 'posix', options: { directory: 'r' } } },
        defaultVolumeDriver: 'x',
      }),
    );
    const r = await cairn(['volume', 'list', '--config', config, '--json'], { cwd });
    expect(r.code).toBe(2);
    const e = jsonError(r);
    expect(e.code).toBe('INVALID_INPUT');
    expect(e.message).toContain('defaultVolumeDriver');
    expect(e.message).toMatch(/… \(\d{6} characters\)/);
    expect(e.message.length).toBeLessThan(2 * MAX_ECHO + config.length);
  });
});
