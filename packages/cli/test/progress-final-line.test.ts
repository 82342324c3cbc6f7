import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { progressReporter } from '../src/output/progress.js';
import { MiB } from './helpers.js';

/**
 * docs/cli.md, progress: without a terminal, a plain line at most every 2 s and once at the end;
 * the final line is never printed twice (a job whose first report is already its end, such as a
 * small import, or a verify of nothing: `0 B / 0 B (100%)`).
 */
describe('plain progress lines', () => {
  const isTTY = process.stderr.isTTY;
  const write = process.stderr.write;
  let lines: string[];
  beforeEach(() => {
    lines = [];
    // Capture what the reporter writes: stderr as a pipe, not a terminal.
    Object.defineProperty(process.stderr, 'isTTY', { value: false, configurable: true });
    process.stderr.write = ((chunk: string | Uint8Array) => (lines.push(String(chunk)), true)) as typeof process.stderr.write;
  });
  afterEach(() => {
    process.stderr.write = write;
    Object.defineProperty(process.stderr, 'isTTY', { value: isTTY, configurable: true });
  });

  it('a first report that is already the end prints one line, not two', () => {
    const p = progressReporter('import');
    p.update(3 * MiB, 3 * MiB);
    p.stop();
    expect(lines).toEqual(['import: 3.0 MiB / 3.0 MiB (100%)\n']);
  });

  it('a verify of nothing prints `0 B / 0 B (100%)` once', () => {
    const p = progressReporter('verify');
    p.update(0, 0);
    p.update(0, 0);
    p.stop();
    p.stop();
    expect(lines).toEqual(['verify: 0 B / 0 B (100%)\n']);
  });

  it('the end reported after the first line is printed once, then or at stop', () => {
    const p = progressReporter('backup');
    p.update(0, 4 * MiB);
    p.update(4 * MiB, 4 * MiB); // printed now (2 s passed) or at stop: once either way
    p.stop();
    expect(lines).toEqual(['backup: 0 B / 4.0 MiB (0%)\n', 'backup: 4.0 MiB / 4.0 MiB (100%)\n']);
  });

  it('nothing with quiet, nothing without a report', () => {
    progressReporter('export', { quiet: true }).update(1, 1);
    progressReporter('export').stop();
    expect(lines).toEqual([]);
  });
});
