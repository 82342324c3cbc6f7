import { describe, expect, it } from 'vitest';
import { formatBytes } from '../src/output/units.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('formatBytes', () => {
  it('bytes whole; one decimal below 100 of a unit, none from 100', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(150 * KiB)).toBe('150 KiB');
    expect(formatBytes(64 * MiB)).toBe('64.0 MiB');
    expect(formatBytes(undefined)).toBe('-');
  });

  it('judges the decimals on the rounded value: 99.96 KiB is 100 KiB, not 100.0 KiB', () => {
    expect(formatBytes(Math.round(99.96 * KiB))).toBe('100 KiB');
  });

  it('goes to the next unit when rounding reaches 1024: 1048575 bytes is 1.0 MiB, not 1024 KiB', () => {
    expect(formatBytes(MiB - 1)).toBe('1.0 MiB');
    expect(formatBytes(Math.round(1023.7 * MiB))).toBe('1.0 GiB');
    expect(formatBytes(1023.4 * KiB)).toBe('1023 KiB');
    // The largest unit has no next one.
    expect(formatBytes(2048 * 1024 ** 4)).toBe('2048 TiB');
  });
});
