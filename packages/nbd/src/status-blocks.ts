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
