import { isCairnError } from '@cairn/core';

/**
 * True for a failure after which a QMP command may have run or may still run: no reply came
 * (UNAVAILABLE: timeout or lost connection; CANCELLED), or something other than a CairnError.
 * qemu runs a command the client stopped waiting for, and runs the commands of one monitor in the
 * order they were sent: the reply to a later command proves the earlier one has run.
 */
export function outcomeUnknown(err: unknown): boolean {
  return !isCairnError(err) || err.code === 'UNAVAILABLE' || err.code === 'CANCELLED';
}
