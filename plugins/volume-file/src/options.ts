import { knownOptions, optionError } from '@cairn/core';

/** Options of the `file` volume driver. */
export interface FileVolumeDriverOptions {
  /** Directory holding images, sidecars and bitmaps; created when missing. Required. */
  directory: string;
}

const DRIVER = 'file';
const KNOWN = ['directory'] as const;

/**
 * Validates the driver's options (the factory's and the constructor's alike). `INVALID_INPUT` with
 * `details.option` naming the bad option: `directory` missing, not a string or blank; any unknown
 * option (a misspelt key would otherwise be ignored without a word). Returns only the known options.
 */
export function parseFileVolumeOptions(raw: unknown): FileVolumeDriverOptions {
  const { directory } = knownOptions(raw, KNOWN, DRIVER, 'directory');
  if (typeof directory !== 'string' || directory.trim() === '') throw optionError(DRIVER, 'directory', 'is required and must be a non-empty string');
  return { directory };
}
