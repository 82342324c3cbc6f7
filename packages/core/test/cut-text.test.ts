import { describe, expect, it } from 'vitest';
import { assertCallerVolumeMetadata, cutText, quotedCut } from '../src/index.js';

/**
 * cutText and quotedCut bound the user text a message echoes: at most `max` code points shown, a
 * longer text noted with its whole length; a character outside the BMP (two UTF-16 units) is
 * never split.
 */
describe('cutText, quotedCut', () => {
  it('leave text of at most max characters whole, cut longer text noting its length in characters (code points)', () => {
    expect(cutText('abc', 3)).toBe('abc');
    expect(cutText('abcd', 3)).toBe('abc… (4 characters)');
    expect(cutText('\u{1F600}'.repeat(3), 3)).toBe('\u{1F600}'.repeat(3)); // 6 UTF-16 units, 3 characters
    expect(cutText('\u{1F600}'.repeat(4), 3)).toBe(`${'\u{1F600}'.repeat(3)}… (4 characters)`);
    expect(quotedCut('a"b', 3)).toBe('"a\\"b"');
    expect(quotedCut('x\ny'.repeat(2), 4)).toBe('"x\\nyx"… (6 characters)');
  });

  it('a metadata key too long is echoed cut at 40 whole characters with its length, its characters outside the BMP never split', () => {
    const key = '\u{1F511}'.repeat(256);
    let message = '';
    try {
      assertCallerVolumeMetadata({ [key]: 'v' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toBe(`metadata key "${'\u{1F511}'.repeat(40)}"… (256 characters) is longer than 255 characters`);
  });
});
