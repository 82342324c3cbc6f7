import { CairnError } from '../errors.js';
import type { ByteRange } from '../contracts/block-device.js';

/** Throws INVALID_INPUT unless `size` is a positive safe integer multiple of 512. */
export function assertVolumeSize(size: unknown, driver?: string): asserts size is number {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
    throw new CairnError('INVALID_INPUT', `volume size must be a positive multiple of 512 bytes, got ${String(size)}`, {
      driver,
      details: { size },
    });
  }
}

/** Throws INVALID_INPUT unless `[offset, offset+length)` lies inside `[0, size)`. */
export function assertRange(offset: number, length: number, size: number, driver?: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new CairnError('INVALID_INPUT', `range [${offset}, +${length}) is outside the device of ${size} bytes`, {
      driver,
      details: { offset, length, size },
    });
  }
}

/** Returns `range` or the whole `[0,size)`, checked. */
export function resolveRange(range: ByteRange | undefined, size: number, driver?: string): ByteRange {
  const r = range ?? { offset: 0, length: size };
  assertRange(r.offset, r.length, size, driver);
  return r;
}

/** Throws INVALID_INPUT unless `id` is a non-empty string of safe characters. */
export function assertId(id: unknown, what: string, driver?: string): asserts id is string {
  if (typeof id !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/.test(id)) {
    throw new CairnError('INVALID_INPUT', `${what} id is malformed: ${JSON.stringify(id)}`, { driver });
  }
}

const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Throws INVALID_INPUT unless `key` is a valid object-store key (see ObjectStore). */
export function assertObjectKey(key: unknown, driver?: string): asserts key is string {
  const ok =
    typeof key === 'string' &&
    key.length > 0 &&
    Buffer.byteLength(key) <= 1024 &&
    key.split('/').every((s) => KEY_SEGMENT.test(s) && s !== '.' && s !== '..');
  if (!ok) throw new CairnError('INVALID_INPUT', `object key is malformed: ${JSON.stringify(key)}`, { driver });
}

/** Throws INVALID_INPUT unless `prefix` is empty or a valid key prefix (may end with `/`). */
export function assertObjectPrefix(prefix: unknown, driver?: string): asserts prefix is string {
  if (prefix === '') return;
  if (typeof prefix !== 'string') throw new CairnError('INVALID_INPUT', 'object prefix must be a string', { driver });
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  assertObjectKey(trimmed, driver);
}
