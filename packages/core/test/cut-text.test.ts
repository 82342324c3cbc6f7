import { describe, expect, it } from 'vitest';
import { assertCallerVolumeMetadata, cutText, escapedCut, escapedText, quotedCut } from '../src/index.js';

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

  it('escapedText escapes C0, DEL, C1, U+2028/2029 and bidi controls as JSON writes them, adds no quotes, leaves the rest (backslashes too) as it is', () => {
    expect(escapedText('a\nb\r\t\x1b[2J\u0000\u007f\u0085\u009b\u2028\u2029\u202a\u202e\u2066\u2069\u061c\u200e\u200f\ufeffz')).toBe(
      'a\\nb\\r\\t\\u001b[2J\\u0000\\u007f\\u0085\\u009b\\u2028\\u2029\\u202a\\u202e\\u2066\\u2069\\u061c\\u200e\\u200f\\ufeffz',
    );
    expect(escapedText('C:\\dir "x" é\u{1F600}\u00a0\u200f')).toBe('C:\\dir "x" é\u{1F600}\u00a0\\u200f');
  });

  it('quotedCut also escapes what JSON leaves raw (DEL, C1, U+2028/2029, bidi controls), never a character twice', () => {
    expect(quotedCut('a\u2028b\u202ec\u007f\u0085\u2066', 20)).toBe('"a\\u2028b\\u202ec\\u007f\\u0085\\u2066"');
    expect(quotedCut('x\ny\\u2028', 20)).toBe('"x\\ny\\\\u2028"');
  });

  it('escapedCut cuts as cutText (counting the text as given), then escapes the part shown', () => {
    expect(escapedCut('abc', 3)).toBe('abc');
    expect(escapedCut('a\nb', 3)).toBe('a\\nb');
    expect(escapedCut('\x1b'.repeat(5), 3)).toBe('\\u001b\\u001b\\u001b… (5 characters)');
    expect(escapedCut('\u{1F600}'.repeat(4), 3)).toBe(`${'\u{1F600}'.repeat(3)}… (4 characters)`);
  });
});
