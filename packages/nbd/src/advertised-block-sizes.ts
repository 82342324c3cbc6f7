/**
 * proto.md's MUSTs ("Block size constraints") on the block sizes a server advertises in
 * NBD_INFO_BLOCK_SIZE, checked by the client:
 * - minimum: "MUST be a power of 2, MUST NOT be larger than 2^16 (65,536)";
 * - preferred: "MUST be a power of 2 at least as large as the maximum of the minimum block size
 *   and 2^9 (512)";
 * - maximum: "MUST be either an integer multiple of the minimum block size or the value
 *   0xffffffff for no inherent limit, MUST be at least as large as the smaller of the preferred
 *   block size or export size" (and, here, not below the minimum: no request could be sent).
 * A client that asked for NBD_INFO_BLOCK_SIZE with NBD_OPT_GO "MUST abide by the block size
 * constraints it receives", which it cannot do with sizes that break these rules, nor can it fall
 * back to defaults the server did not agree to; so a violation is the server breaking a MUST,
 * for which proto.md lets the client "initiate a hard disconnect".
 */

/** Largest minimum block size: 2^16. */
const MAX_MIN_BLOCK = 2 ** 16;
/** Smallest preferred block size (with the minimum block size): 2^9. */
const MIN_PREFERRED = 2 ** 9;
/** The maximum block size meaning "no inherent limit". */
export const NO_MAX_BLOCK = 0xffffffff;

export interface AdvertisedBlockSizes {
  min: number;
  preferred: number;
  max: number;
}

/**
 * What is wrong with `sizes` as advertised for an export of `exportSize` bytes, or undefined when
 * they follow proto.md. `exportSize` undefined: the rule involving it is not checked. Pure.
 */
export function blockSizeViolation(sizes: AdvertisedBlockSizes, exportSize?: number): string | undefined {
  const { min, preferred, max } = sizes;
  if (!isPowerOfTwo(min) || min > MAX_MIN_BLOCK) return `minimum block size ${min} is not a power of 2 from 1 to ${MAX_MIN_BLOCK}`;
  const least = Math.max(min, MIN_PREFERRED);
  if (!isPowerOfTwo(preferred) || preferred < least) return `preferred block size ${preferred} is not a power of 2 of at least ${least}`;
  if (max !== NO_MAX_BLOCK && (max < min || max % min !== 0)) {
    return `maximum block size ${max} is neither a multiple of the minimum block size ${min} nor ${NO_MAX_BLOCK}`;
  }
  if (exportSize !== undefined && max < Math.min(preferred, exportSize)) {
    return `maximum block size ${max} is below the smaller of the preferred block size ${preferred} and the export size ${exportSize}`;
  }
  return undefined;
}

function isPowerOfTwo(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 1 && (v & (v - 1)) === 0;
}
