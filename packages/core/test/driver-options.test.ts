import { describe, expect, it } from 'vitest';
import { CairnError, knownOptions, optionError } from '../src/index.js';

describe('knownOptions / optionError (a driver option check shared by every plugin)', () => {
  const known = ['directory', 'timeoutMs'] as const;

  it('returns the options when every key is known, values unchecked', () => {
    const raw = { directory: '/d', timeoutMs: 'not checked here' };
    expect(knownOptions(raw, known, 'd1', 'directory')).toBe(raw);
    expect(knownOptions({}, known, 'd1', 'directory')).toEqual({});
  });

  it('names the first unknown key and lists the known ones (a misspelt key is never ignored)', () => {
    const err = (() => {
      try {
        knownOptions({ directory: '/d', timeotMs: 5 }, known, 'd1', 'directory');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(CairnError);
    expect(err).toMatchObject({ code: 'INVALID_INPUT', driver: 'd1', details: { option: 'timeotMs' } });
    expect((err as Error).message).toContain('`timeotMs` is unknown (known: directory, timeoutMs)');
  });

  it.each([null, undefined, 'dir', 7, ['directory']])('options that are not a plain object (%j) blame the required option', (raw) => {
    expect(() => knownOptions(raw, known, 'd1', 'directory')).toThrow(
      expect.objectContaining({ code: 'INVALID_INPUT', details: { option: 'directory' } }),
    );
  });

  it('optionError names the option in the message and in details', () => {
    expect(optionError('d2', 'x', 'must be a boolean')).toMatchObject({ code: 'INVALID_INPUT', driver: 'd2', message: expect.stringContaining('option `x` must be a boolean'), details: { option: 'x' } });
  });
});
