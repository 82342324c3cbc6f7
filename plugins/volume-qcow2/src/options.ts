import { knownOptions, optionError } from '@cairn/core';
import { MAX_TIMEOUT_MS } from '@cairn/qmp';
import type { Qcow2VolumeDriverOptions } from './qcow2-volume-driver.js';

const DRIVER = 'qcow2';
const STRINGS = ['runtimeDir', 'qemuImg', 'qemuStorageDaemon'] as const;
const MILLISECONDS = ['commandTimeoutMs', 'stopTimeoutMs', 'qemuImgTimeoutMs', 'qemuImgStallMs'] as const;
/** Options that are one timer's delay: node fires a longer one at once. */
const ONE_TIMER: ReadonlySet<string> = new Set(['stopTimeoutMs']);
const KNOWN = ['directory', ...STRINGS, ...MILLISECONDS] as const;
const invalid = (option: string, problem: string) => optionError(DRIVER, option, problem);

/**
 * Validates the factory's options. `INVALID_INPUT` with `details.option` naming the bad option:
 * `directory` missing, not a string or blank; `runtimeDir`, `qemuImg`, `qemuStorageDaemon` not a
 * non-empty string; `commandTimeoutMs`, `stopTimeoutMs`, `qemuImgTimeoutMs`, `qemuImgStallMs`
 * not a positive number, `stopTimeoutMs` also one over 2^31 - 1 (node's longest timer; the stop
 * would refuse it only when `close()` runs); any unknown option (a misspelt `comandTimeoutMs`
 * would otherwise be ignored without a word, the default used). Returns only the options given,
 * known ones.
 */
export function parseQcow2VolumeOptions(raw: unknown): Qcow2VolumeDriverOptions {
  const o = knownOptions(raw, KNOWN, DRIVER, 'directory');
  if (typeof o.directory !== 'string' || o.directory.trim() === '') throw invalid('directory', 'is required and must be a non-empty string');
  const options: Qcow2VolumeDriverOptions = { directory: o.directory };
  for (const key of STRINGS) {
    const v = o[key];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v.trim() === '') throw invalid(key, 'must be a non-empty string');
    options[key] = v;
  }
  for (const key of MILLISECONDS) {
    const v = o[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw invalid(key, 'must be a positive number of milliseconds');
    if (ONE_TIMER.has(key) && v > MAX_TIMEOUT_MS) throw invalid(key, `must be at most ${MAX_TIMEOUT_MS} milliseconds`);
    options[key] = v;
  }
  return options;
}
