import { CairnError } from '@cairn/core';

/**
 * The durations that environment variables set, in milliseconds: for each key of `names`, the
 * variable it names, when set and not empty. A value must be a whole number written in decimal
 * digits from 1 to `maxMs`; anything else is `INVALID_INPUT` naming the variable. Unset keys are
 * left out (the caller's defaults stand).
 */
export function millisecondsFromEnv<K extends string>(env: NodeJS.ProcessEnv, names: Record<K, string>, maxMs: number): Partial<Record<K, number>> {
  const out: Partial<Record<K, number>> = {};
  for (const [key, name] of Object.entries(names) as [K, string][]) {
    const text = env[name];
    if (text === undefined || text === '') continue;
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < 1 || n > maxMs) throw new CairnError('INVALID_INPUT', `${name} takes milliseconds, a whole number from 1 to ${maxMs}, not ${JSON.stringify(text)}`);
    out[key] = n;
  }
  return out;
}
