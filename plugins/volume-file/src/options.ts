import { CairnError } from '@cairn/core';

/** Options of the `file` volume driver. */
export interface FileVolumeDriverOptions {
  /** Directory holding images, sidecars and bitmaps; created when missing. Required. */
  directory: string;
}

const KNOWN: ReadonlySet<string> = new Set(['directory']);

function invalid(option: string, message: string): CairnError {
  return new CairnError('INVALID_INPUT', `option \`${option}\` ${message}`, { driver: 'file', details: { option } });
}

/**
 * Validates the driver's options (the factory's and the constructor's alike). `INVALID_INPUT` with
 * `details.option` naming the bad option: `directory` missing, not a string or blank; any unknown
 * option (a misspelt key would otherwise be ignored without a word). Returns only the known options.
 */
export function parseFileVolumeOptions(raw: unknown): FileVolumeDriverOptions {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw invalid('directory', 'is required: the options must be an object');
  for (const name of Object.keys(raw)) {
    if (!KNOWN.has(name)) throw invalid(name, `is unknown (known: ${[...KNOWN].join(', ')})`);
  }
  const { directory } = raw as Record<string, unknown>;
  if (typeof directory !== 'string' || directory.trim() === '') throw invalid('directory', 'is required and must be a non-empty string');
  return { directory };
}
