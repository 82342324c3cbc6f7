/**
 * Stacks on stderr in text mode: the binary's line for an error no command handled (main.ts) and
 * the stack `CAIRN_DEBUG=1` adds to an error. A message inside an error may echo user text (an id,
 * a path, a peer's answer) carrying terminal escapes or a forged line: the stack shows them
 * escaped, as shownMessage shows a message, while its frames stay on their indented lines.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CairnError } from '@cairn/core';
import { internalErrorText } from '../src/output/internal-error.js';
import { Output } from '../src/output/output.js';

/** An error whose message echoes text with ESC (colour, clear screen), a bidi override and a forged stderr line. */
const hostile = (): Error => new Error('volume "\u001b[31mred\u001b[2J\u202eevil" gone\nerror [OK]: all good');

/** Terminal controls and line breaks at column 0 that no stack line may carry raw. */
const RAW = /[\u001b\u202e]|\n(?! {2})/u;

describe('internalErrorText (main.ts)', () => {
  it('escapes the controls and forged lines a message carries; frames stay on their lines', () => {
    const text = internalErrorText(hostile());
    expect(text.startsWith('error [INTERNAL]: Error: volume "\\u001b[31mred\\u001b[2J\\u202eevil" gone\\nerror [OK]: all good\n    at ')).toBe(true);
    expect(text.endsWith('\n')).toBe(true);
    expect(RAW.test(text.slice(0, -1))).toBe(false);
    expect(text.split('\n').slice(1, -1).every((line) => line.startsWith('    at '))).toBe(true);
  });

  it('a thrown value that is no Error: its text, escaped', () => {
    expect(internalErrorText('bad\u001b[2J')).toBe('error [INTERNAL]: bad\\u001b[2J\n');
    expect(internalErrorText(undefined)).toBe('error [INTERNAL]: undefined\n');
  });
});

describe('Output.error with CAIRN_DEBUG=1', () => {
  let written: string[];
  beforeEach(() => {
    written = [];
    vi.stubEnv('CAIRN_DEBUG', '1');
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (written.push(String(chunk)), true));
  });
  afterEach(() => {
    vi.restoreAllMocks();
    vi.unstubAllEnvs();
  });

  for (const [what, err] of [
    ['an internal error', hostile()],
    ['a CairnError', new CairnError('NOT_FOUND', hostile().message)],
  ] as const) {
    it(`prints the stack of ${what} escaped`, () => {
      new Output({}).error(err);
      const stack = written.at(-1)!;
      expect(stack).toContain('\\u001b[31mred\\u001b[2J\\u202eevil" gone\\nerror [OK]: all good\n    at ');
      expect(RAW.test(stack.slice(0, -1))).toBe(false);
    });
  }
});
