import { CairnError } from '@cairn/core';

/**
 * The parser of an option that takes a whole number from `min` to `max`, written in decimal digits
 * only: no sign, fraction, exponent, `0x`, `_` or surrounding spaces (`" 5"` is refused, not
 * trimmed). `INVALID_INPUT` naming the option and the range otherwise. Every count option of the
 * CLI goes through it (`cairn serve`'s and `backup serve`'s), so they all take the same text.
 */
export function wholeNumber(option: string, min: number, max: number): (text: string) => number {
  return (text) => {
    const n = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new CairnError('INVALID_INPUT', `${option} takes a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`);
    }
    return n;
  };
}
