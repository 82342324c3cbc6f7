import type { StatusDescriptor } from './nbd-backend.js';
import { BASE_ALLOCATION } from './protocol.js';

/**
 * How the flags of the parts of one block combine into the flags reported for the whole block,
 * so that the block is never claimed to be in a state one of its parts is not in.
 * `base:allocation` (proto.md: "a server MAY always safely report a status of 0"): a flag only
 * when every part has it, so a block holding any data is neither a hole nor zeros. Any other
 * context (a `qemu:dirty-bitmap:`, 1 = dirty; NbdBackend.metaContexts are taken to use set bits
 * for the state a client must not miss): a flag when any part has it.
 */
export function safeMerge(context: string): (a: number, b: number) => number {
  return context === BASE_ALLOCATION ? (a, b) => a & b : (a, b) => a | b;
}

/**
 * Folds descriptors that are consecutive from a request's offset and cover `length` bytes onto blocks of `min` bytes counted from that offset, for NBD_CMD_BLOCK_STATUS replies
 * (proto.md: the server "MUST use descriptor lengths that are an integer multiple of any
 * advertised minimum block size"). A block made of parts with different flags gets
 * `merge` of them (see `safeMerge`); consecutive equal flags are merged into one descriptor
 * (proto.md: the server SHOULD use different status values between consecutive descriptors).
 *
 * Every descriptor returned is a multiple of `min` long, except when `length` is shorter than
 * `min`: then the one descriptor is `length` long (no whole block fits; the caller arranges that
 * only for requests that broke the client's alignment MUST). A partial block at the end of a
 * longer `length` is left out (proto.md: the server MAY return less data than requested).
 * `descs` lengths must be positive integers (their sum is `length`). O(descriptors + blocks cut
 * by a descriptor boundary).
 */
export function foldToBlocks(descs: readonly StatusDescriptor[], min: number, merge: (a: number, b: number) => number): StatusDescriptor[] {
  const out: StatusDescriptor[] = [];
  const emit = (len: number, flags: number): void => {
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += len;
    else out.push({ length: len, flags });
  };
  let at = 0;
  let acc = 0; // flags of the block begun at `at - at % min`, while it is partly seen
  for (const d of descs) {
    let left = d.length;
    while (left > 0) {
      const into = at % min;
      if (into === 0 && left >= min) {
        const whole = left - (left % min);
        emit(whole, d.flags);
        at += whole;
        left -= whole;
        continue;
      }
      const take = Math.min(left, min - into);
      acc = into === 0 ? d.flags : merge(acc, d.flags);
      at += take;
      left -= take;
      if (at % min === 0) emit(min, acc);
    }
  }
  if (at % min !== 0 && out.length === 0) out.push({ length: at, flags: acc });
  return out;
}
