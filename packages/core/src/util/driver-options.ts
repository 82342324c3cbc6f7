import { CairnError } from '../errors.js';

/**
 * `INVALID_INPUT` for a driver's option: the message is ``option `name` <problem>``, `details.option`
 * names the option and `driver` the driver, so a caller (the CLI, the API) can point at the key.
 */
export function optionError(driver: string, option: string, problem: string): CairnError {
  return new CairnError('INVALID_INPUT', `option \`${option}\` ${problem}`, { driver, details: { option } });
}

/**
 * Returns `raw` as a record when it is a plain object (not null, not an array) whose every key is
 * one of `known`. Else `INVALID_INPUT` (optionError): for a non-object, blaming `required` (the
 * option without which nothing works); for the first key not in `known`, naming it and listing the
 * known ones, since a misspelt key would otherwise be ignored without a word and its default used.
 * The values are not checked: that is the driver's part.
 */
export function knownOptions(raw: unknown, known: readonly string[], driver: string, required: string): Record<string, unknown> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw optionError(driver, required, 'is required: the options must be an object');
  }
  for (const name of Object.keys(raw)) {
    if (!known.includes(name)) throw optionError(driver, name, `is unknown (known: ${known.join(', ')})`);
  }
  return raw as Record<string, unknown>;
}
