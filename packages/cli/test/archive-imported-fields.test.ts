// importedFields keeps an archived record's volume metadata as the rest of Cairn does: every key
// with a string value, `__proto__` and `constructor` included (docs/api.md: any key), no others.
import { describe, expect, it } from 'vitest';
import { importedFields } from '../src/archive/importer.js';

const record = (volumeMetadata: unknown) =>
  ({ id: 'b1', name: 'n', description: '', volumeId: 'v1', volumeName: 'v', size: 0, service: 'posix', incremental: false, volumeMetadata, createdAt: new Date(0).toISOString() }) as never;

describe('importedFields: volume metadata', () => {
  it('keeps a key named __proto__ (parsed from the archive as an own property) as an own string entry', () => {
    const parsed = JSON.parse('{"__proto__":"p","constructor":"c","k":"v","n":1}') as unknown;
    const { volumeMetadata } = importedFields(record(parsed));
    expect(Object.entries(volumeMetadata)).toEqual([
      ['__proto__', 'p'],
      ['constructor', 'c'],
      ['k', 'v'],
    ]);
    expect(Object.getPrototypeOf(volumeMetadata)).toBe(Object.prototype);
    expect(JSON.stringify(volumeMetadata)).toBe('{"__proto__":"p","constructor":"c","k":"v"}');
  });

  it('makes metadata that is not an object empty', () => {
    expect(importedFields(record('x')).volumeMetadata).toEqual({});
    expect(importedFields(record(null)).volumeMetadata).toEqual({});
  });
});
