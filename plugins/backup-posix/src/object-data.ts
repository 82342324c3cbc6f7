import { CairnError } from '@cairn/core';
import { DRIVER } from './fs-errors.js';

/**
 * Throws `INVALID_INPUT` (details.argument = `data`) unless `data` is a Uint8Array (a Buffer is
 * one). ObjectStore's put and part appends take bytes only; a JavaScript caller may still hand
 * over null, a string, a stream or an array, which must be refused before any file or directory
 * is made (a string would otherwise be written as text by fs's write overload).
 */
export function assertObjectData(data: unknown, call: string): asserts data is Uint8Array {
  if (data instanceof Uint8Array) return;
  const got = data === null ? 'null' : Array.isArray(data) ? 'an array' : typeof data === 'object' ? `a ${data.constructor?.name ?? 'plain'} object` : typeof data;
  throw new CairnError('INVALID_INPUT', `${call}: argument data must be a Uint8Array (a Buffer), got ${got}`, { driver: DRIVER, details: { argument: 'data' } });
}
