/** A zero buffer to compare with (never written). 64 KiB stays in cache; larger measured slower. */
const ZEROS = Buffer.alloc(64 * 1024);

/**
 * Whether every byte of `b` is zero: the tree's one zero test (the repository's chunk worker, the
 * memory backup service, volume-file's zero scan, the CLI's import writers and archive scan).
 * Compares with memcmp, ZEROS.length bytes at a time, by offsets into `b` (no views allocated):
 * some 40 times faster than a byte loop, and as fast as one compare against a chunk-sized zero
 * buffer (faster for chunks of 1 MiB and more) without keeping such a buffer.
 */
export function isZero(b: Uint8Array): boolean {
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - at);
    if (ZEROS.compare(b, at, at + n, 0, n) !== 0) return false;
  }
  return true;
}
