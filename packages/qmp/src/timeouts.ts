/**
 * Checks of the timeout options of this package. A timer given NaN or a negative number fires at
 * once in node, and one over 2^31 - 1 ms fires at once too; but a NaN deadline also compares false
 * with every time, so the code around it could wait for ever. Every timeout is therefore checked
 * where it is given, before anything is sent or spawned.
 */
import { CairnError } from '@cairn/core';

/** Longest timer node keeps (2^31 - 1 ms, about 24.8 days); longer ones fire at once. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * Throws INVALID_INPUT (tagged `driver`, `details.option`) unless `value` is undefined (the
 * default applies), a number of ms from 0 to `MAX_TIMEOUT_MS`, or, with `infinite`, `Infinity`
 * (waits for ever). NaN, negative numbers and other types are refused. No I/O.
 */
export function checkTimeoutMs(option: string, value: unknown, driver: string, infinite = false): void {
  if (value === undefined) return;
  if (typeof value === 'number' && ((value >= 0 && value <= MAX_TIMEOUT_MS) || (infinite && value === Number.POSITIVE_INFINITY))) return;
  const allowed = `a number of ms from 0 to ${MAX_TIMEOUT_MS}${infinite ? ' or Infinity' : ''}`;
  throw new CairnError('INVALID_INPUT', `${option} must be ${allowed}, not ${String(value)}`, { driver, details: { option } });
}
