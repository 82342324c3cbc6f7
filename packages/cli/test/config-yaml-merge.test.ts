import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CairnError } from '@cairn/core';
import { fromText } from '../src/config/load.js';
import { MAX_YAML_ALIASES } from '../src/config/yaml-document.js';

const dir = '/etc/cairn';
const file = join(dir, 'cairn.config.yaml');

/** What fromText throws (or undefined), and how long it took. */
function load(text: string): { err: CairnError | undefined; cpuMs: number } {
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
    return { err: err as CairnError, cpuMs: cpuMs() };
  }
}

const drivers = 'volumeDrivers:\n  disks: { plugin: file, options: { directory: vols } }\n';

/** docs/cli.md, "Config", YAML: merge keys (`<<`) of YAML 1.1 are expanded, within the alias bound and in linear time. */
describe('config: YAML merge keys', () => {
  it('fromText() of `<<: *one` gives a target the keys of the anchored one, its own keys winning', () => {
    const text = [
      drivers,
      'targets:',
      '  one: &one',
      '    plugin: posix',
      '    options: &opts { directory: shared, repository: { init: true } }',
      '  two:',
      '    <<: *one',
      '    options: { directory: two }',
      '  three:',
      '    <<: *one',
      '    options: { <<: *opts, directory: three }',
      '',
    ].join('\n');
    const { config } = fromText(file, text);
    expect(config.targets.one).toEqual({ plugin: 'posix', options: { directory: join(dir, 'shared'), repository: { init: true } } });
    expect(config.targets.two).toEqual({ plugin: 'posix', options: { directory: join(dir, 'two') } });
    expect(config.targets.three).toEqual({ plugin: 'posix', options: { directory: join(dir, 'three'), repository: { init: true } } });
  });

  it('fromText() of `<<: [*a, *b]` merges both, the earlier map winning; a quoted "<<" is an ordinary key', () => {
    const text = [
      drivers,
      'targets:',
      '  a: &a { plugin: posix, options: { directory: ra } }',
      '  b: &b { plugin: other, options: { directory: rb, repository: { init: true } } }',
      '  c: { <<: [*a, *b] }',
      '',
    ].join('\n');
    expect(fromText(file, text).config.targets.c).toEqual({ plugin: 'posix', options: { directory: join(dir, 'ra') } });
    const quoted = load(`${drivers}targets:\n  a: &a { plugin: posix }\n  c: { "<<": *a, plugin: posix }\n`);
    expect(quoted.err).toMatchObject({ code: 'INVALID_INPUT' }); // the schema refuses the unknown key "<<"
    expect(quoted.err?.message).toContain('<<');
  });

  it('a merge key whose value is not a map (or a sequence of maps) is INVALID_INPUT at its line', () => {
    const { err } = load(`${drivers}targets:\n  a: &a [1]\n  c:\n    <<: *a\n`);
    expect(err).toBeInstanceOf(CairnError);
    expect(err).toMatchObject({ code: 'INVALID_INPUT', details: { file, line: 6, column: 5 } });
  });

  it('a merge bomb (each map merging the one before twice: 2^50 keys copied by a naive merge) loads in linear time', { timeout: 60_000 }, () => {
    const levels = MAX_YAML_ALIASES / 2;
    const lines = [drivers, 'targets:', '  t0: &t0 { plugin: posix, options: { directory: r }, k0: 0 }'];
    for (let i = 1; i <= levels; i++) lines.push(`  t${i}: &t${i} { <<: [*t${i - 1}, *t${i - 1}], k${i}: ${i} }`);
    const { err, cpuMs } = load(lines.join('\n'));
    expect(err).toMatchObject({ code: 'INVALID_INPUT' }); // the schema refuses the keys k0…k50, but only after the merges
    expect(err?.message).toContain(`targets.t${levels}`);
    expect(cpuMs).toBeLessThan(2_000);
  });

  it('aliases through merge keys count against the alias bound: one too many is INVALID_INPUT at once', { timeout: 60_000 }, () => {
    const lines = [drivers, 'targets:', '  t0: &t0 { plugin: posix, options: { directory: r } }'];
    for (let i = 1; i <= MAX_YAML_ALIASES + 1; i++) lines.push(`  t${i}: &t${i} { <<: *t${i - 1} }`);
    const { err, cpuMs } = load(lines.join('\n'));
    expect(err).toMatchObject({ code: 'INVALID_INPUT', details: { line: 5 + MAX_YAML_ALIASES + 1 } });
    expect(err?.message).toMatch(/aliases/);
    expect(cpuMs).toBeLessThan(2_000);
  });
});
