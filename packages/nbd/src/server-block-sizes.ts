import { CairnError } from '@cairn/core';
import { MAX_PAYLOAD_CAP } from './protocol.js';
import type { ServerBlockSizes } from './server-handshake.js';

/** The block size options of an NbdServer (documented on `NbdServerOptions`). */
export interface BlockSizeOptions {
  maxPayload?: number;
  minBlockSize?: number;
  preferredBlockSize?: number;
}

/** Largest minimum block size proto.md allows: it "MUST NOT be larger than 2^16 (65,536)". */
const MAX_MIN_BLOCK = 2 ** 16;
/** Smallest preferred block size proto.md allows (with the minimum block size): 2^9. */
const MIN_PREFERRED = 2 ** 9;

/**
 * The advertised block sizes (NBD_INFO_BLOCK_SIZE) with their defaults (min 1, preferred 4096,
 * max 32 MiB), held to proto.md's MUSTs ("Block size constraints"):
 * - minimum: "MUST be a power of 2, MUST NOT be larger than 2^16 (65,536)";
 * - preferred: "MUST be a power of 2 at least as large as the maximum of the minimum block size
 *   and 2^9 (512)";
 * - maximum: "MUST be either an integer multiple of the minimum block size or the value
 *   0xffffffff", and "at least as large as the smaller of the preferred block size or export
 *   size". Here it is at least the preferred size (whatever the export size) and at most 32 MiB
 *   (`MAX_PAYLOAD_CAP`, the largest payload this server holds), so 0xffffffff is never valid.
 * `INVALID_INPUT` (tagged `driver`, `details.option` naming the option) otherwise. Pure.
 */
export function resolveBlockSizes(options: BlockSizeOptions, driver: string): ServerBlockSizes {
  const min = options.minBlockSize ?? 1;
  const preferred = options.preferredBlockSize ?? 4096;
  const max = options.maxPayload ?? MAX_PAYLOAD_CAP;
  const bad = (option: keyof BlockSizeOptions, value: number, rule: string): CairnError =>
    new CairnError('INVALID_INPUT', `${option} ${value} is not valid: it must be ${rule}`, { driver, details: { option } });
  if (!Number.isSafeInteger(min) || min < 1 || min > MAX_MIN_BLOCK || !isPowerOfTwo(min)) {
    throw bad('minBlockSize', min, `a power of 2 from 1 to ${MAX_MIN_BLOCK}`);
  }
  const least = Math.max(min, MIN_PREFERRED);
  if (!Number.isSafeInteger(preferred) || preferred < least || !isPowerOfTwo(preferred)) {
    throw bad('preferredBlockSize', preferred, `a power of 2 of at least ${least} (the larger of minBlockSize and 512)`);
  }
  if (!Number.isSafeInteger(max) || max < preferred || max > MAX_PAYLOAD_CAP || max % min !== 0) {
    throw bad('maxPayload', max, `a multiple of minBlockSize (${min}) from preferredBlockSize (${preferred}) to ${MAX_PAYLOAD_CAP}`);
  }
  return { min, preferred, max };
}

function isPowerOfTwo(v: number): boolean {
  return v >= 1 && 2 ** Math.round(Math.log2(v)) === v;
}
