import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromText } from '../src/config/load.js';
import { cairn, jsonError, removeDir, tempDir } from './helpers.js';

/** What fromText throws (or undefined), and how long it took. */
function load(file: string, text: string): { err: { code?: string; message: string; details?: Record<string, unknown> } | undefined; cpuMs: number } {
  // CPU time of this process, not the wall clock: the parse is synchronous, and time the machine
  // gives other processes (two test files run at once) is not the parser's.
  const start = process.cpuUsage();
  const cpuMs = (): number => {
    const used = process.cpuUsage(start);
    return (used.user + used.system) / 1000;
  };
  try {
    fromText(file, text);
    return { err: undefined, cpuMs: cpuMs() };
  } catch (err) {
    return { err: err as { code?: string; message: string }, cpuMs: cpuMs() };
  }
}

/**
 * docs/cli.md, "Config": a config that cannot be parsed is INVALID_INPUT (exit 2), and a config
 * is bounded work: a small hostile document must neither hang the command nor crash it.
 */
describe('config: hostile documents', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  it('a YAML config of many aliases (30 KB, 10,000 aliases of one anchor) is INVALID_INPUT at once, not seconds of CPU (20,000: 42 s)', { timeout: 60_000 }, () => {
    const text = `volumeDrivers: {}\nx: &a 1\ny: [${Array(10_000).fill('*a').join(', ')}]\n`;
    const { err, cpuMs } = load(join(cwd, 'aliases.yaml'), text);
    expect(err?.code).toBe('INVALID_INPUT');
    expect(err?.message).toMatch(/aliases/);
    expect(err?.details).toMatchObject({ line: 3 });
    expect(cpuMs).toBeLessThan(2_000);
  });

  it('an 8 KB YAML config of aliases of an empty collection (which the parser never counts as expansions) is refused at once, not 11 s of CPU', { timeout: 60_000 }, () => {
    const inner = Array(50).fill('*e').join(', ');
    const text = `volumeDrivers: {}\ne: &e []\nb: &b [${inner}]\nc: [${Array(2_000).fill('*b').join(', ')}]\n`;
    const { err, cpuMs } = load(join(cwd, 'empty-anchor.yaml'), text);
    expect(err?.code).toBe('INVALID_INPUT');
    expect(cpuMs).toBeLessThan(2_000);
  });

  it('a config that shares options through a few anchors still loads, relative paths resolved against its directory', () => {
    const text = [
      'volumeDrivers:',
      '  disks: { plugin: file, options: { directory: vols } }',
      'targets:',
      '  one: &target',
      '    plugin: posix',
      '    options: &opts { directory: repo, repository: &repo { init: true } }',
      '  two: *target',
      '  three: { plugin: posix, options: { directory: repo3, repository: *repo } }',
      '',
    ].join('\n');
    const { config } = fromText(join(cwd, 'anchors.yaml'), text);
    expect(config.targets.two).toEqual(config.targets.one);
    expect(config.targets.one!.options.directory).toBe(join(cwd, 'repo'));
    expect(config.targets.three!.options).toEqual({ directory: join(cwd, 'repo3'), repository: { init: true } });
  });

  it('a JSON config nested a million deep and unterminated is INVALID_INPUT (exit 2), not INTERNAL (a stack overflow)', async () => {
    const file = join(cwd, 'deep.json');
    await writeFile(file, '['.repeat(1_000_000));
    const r = await cairn(['volume', 'list', '--config', file, '--json'], { cwd });
    expect(r.code, r.stderr).toBe(2);
    expect(jsonError(r)).toMatchObject({ code: 'INVALID_INPUT', details: { file } });
    expect(jsonError(r).message).toContain('not valid JSON');
  });
});
