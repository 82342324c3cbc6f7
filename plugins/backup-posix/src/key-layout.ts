/**
 * How object keys map to paths under the store's directory, and back.
 *
 * The mapping (stable: changing it orphans every stored object):
 *
 * - A key is `/`-separated segments of `[A-Za-z0-9._-]` (validated by core's `assertObjectKey`),
 *   each at most SEGMENT_MAX_BYTES long (assertStorableKey, before any file system call).
 *   Every segment but the last is a directory; the last is a file name.
 * - When the last segment is a *sharded name* — at least {@link SHARD_MIN_HEX} lowercase hex
 *   digits (`^[0-9a-f]{16,}$`, e.g. a sha256 id) — a directory named after its first two
 *   characters is inserted before it: `data/ab12…` → `data/ab/ab12…`. Every other key maps
 *   segment for segment: `index/latest` → `index/latest`, `data/AB12…` (upper case) → itself.
 * - Reverse: a file whose name is a sharded name is an object only when its parent directory is
 *   exactly its first two characters; its key is its path without that directory. Any other
 *   file's key is its path. The forward mapping is injective (a non-sharded last segment can
 *   never equal a sharded name), so the reverse is exact and `list` returns the original keys.
 * - Temporary files are named `~tmp-<pid>-<random hex>`. `~` is not a key character, so a
 *   temporary file can never be mistaken for, or collide with, an object.
 *
 * A filesystem cannot hold a file and a directory of the same name, so a key can not be both an
 * object and a parent of other keys (`a` and `a/b`), and an unsharded key `p/ab` (two hex
 * characters) can not coexist with sharded keys `p/ab…`. Such a put fails with `CONFLICT`.
 */
import { randomBytes } from 'node:crypto';
import { CairnError, assertObjectKey } from '@cairn/core';

/**
 * Longest segment the store takes, in bytes: NAME_MAX of Linux's common file systems (ext4, XFS,
 * Btrfs, tmpfs, NFS). A file system with a lower limit still refuses longer names (ENAMETOOLONG →
 * `INVALID_INPUT`), only later in the call.
 */
export const SEGMENT_MAX_BYTES = 255;

/** Minimum length of a lowercase hex last segment that is stored under a shard directory. */
export const SHARD_MIN_HEX = 16;

const SHARDED_NAME = new RegExp(`^[0-9a-f]{${SHARD_MIN_HEX},}$`);
const SHARD_DIR = /^[0-9a-f]{2}$/;
const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;
const TEMP_PREFIX = '~tmp-';

/** True when a key's last segment is stored under a two-character shard directory. */
export function isShardedName(segment: string): boolean {
  return SHARDED_NAME.test(segment);
}

/** True when `name` could be a shard directory (two lowercase hex characters). */
export function isShardDirName(name: string): boolean {
  return SHARD_DIR.test(name);
}

/** True when `name` is a valid key segment (so not a temporary file or foreign name). */
export function isKeySegment(name: string): boolean {
  return KEY_SEGMENT.test(name) && name !== '.' && name !== '..';
}

/**
 * Checks a key before any file system call: core's key rules (assertObjectKey), and every segment
 * at most SEGMENT_MAX_BYTES, since each is a file or directory name. `INVALID_INPUT` otherwise
 * (with `details.segmentBytes` and `details.maxBytes` for a segment too long), so that a put or
 * part writer of such a key fails before it writes anything rather than at its rename.
 */
export function assertStorableKey(key: unknown, driver: string): asserts key is string {
  assertObjectKey(key, driver);
  for (const segment of key.split('/')) {
    // Key characters are ASCII: a segment's length is its length in bytes.
    if (segment.length > SEGMENT_MAX_BYTES) {
      const message = `object key ${JSON.stringify(key)} has a segment of ${segment.length} bytes; file names here hold at most ${SEGMENT_MAX_BYTES}`;
      throw new CairnError('INVALID_INPUT', message, { driver, details: { segmentBytes: segment.length, maxBytes: SEGMENT_MAX_BYTES } });
    }
  }
}

/** Path segments (relative to the store's directory) of a validated key. */
export function keyToSegments(key: string): string[] {
  const segments = key.split('/');
  const last = segments[segments.length - 1]!;
  if (isShardedName(last)) segments.splice(segments.length - 1, 0, last.slice(0, 2));
  return segments;
}

/**
 * The key stored at `dirSegments/name`, or `undefined` when that file is not an object
 * (a temporary file, a foreign name, or a sharded name outside its shard directory).
 */
export function segmentsToKey(dirSegments: readonly string[], name: string): string | undefined {
  if (!isKeySegment(name) || !dirSegments.every(isKeySegment)) return undefined;
  if (!isShardedName(name)) return [...dirSegments, name].join('/');
  if (dirSegments[dirSegments.length - 1] !== name.slice(0, 2)) return undefined;
  return [...dirSegments.slice(0, -1), name].join('/');
}

/** A fresh temporary file name, unique across processes and hosts sharing the directory. */
export function newTempName(): string {
  return `${TEMP_PREFIX}${process.pid}-${randomBytes(12).toString('hex')}`;
}

/** True for names made by {@link newTempName}. */
export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX);
}
