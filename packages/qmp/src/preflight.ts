/**
 * Client-side checks for arguments known to crash qemu 7.2 instead of failing cleanly.
 * Observed here: `block-dirty-bitmap-merge` with an empty `bitmaps` list makes
 * qemu-storage-daemon 7.2 die with SIGSEGV (directly or inside a transaction).
 */
import { CairnError } from '@cairn/core';

const hasEmptyMerge = (data: unknown): boolean => {
  const bitmaps = (data as { bitmaps?: unknown } | undefined)?.bitmaps;
  return Array.isArray(bitmaps) && bitmaps.length === 0;
};

/** Throws INVALID_INPUT when `command` with `args` would crash the daemon. No I/O. */
export function assertSafeCommand(command: string, args: unknown, driver: string): void {
  let empty = command === 'block-dirty-bitmap-merge' && hasEmptyMerge(args);
  if (command === 'transaction') {
    const list = (args as { actions?: unknown } | undefined)?.actions;
    empty = Array.isArray(list) && list.some((a: { type?: unknown; data?: unknown }) => a?.type === 'block-dirty-bitmap-merge' && hasEmptyMerge(a.data));
  }
  if (empty) {
    throw new CairnError('INVALID_INPUT', `${command}: block-dirty-bitmap-merge needs at least one source bitmap`, {
      driver,
      details: { command },
    });
  }
}
