import { toCairnError, type ErrorCode } from '@cairn/core';

/**
 * Process exit codes of `cairn`, one per family of CairnError codes. Stable: scripts branch on
 * them (docs/cli.md lists them). A usage error from the argument parser is 2, like INVALID_INPUT.
 */
export const ExitCode = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  CONFLICT: 4,
  CORRUPT: 5,
  UNAVAILABLE: 6,
  NOT_SUPPORTED: 7,
  CANCELLED: 130,
  /** stdout's reader went away (EPIPE): no error code, no message (reportStdoutFailure), as for SIGPIPE (128 + 13). */
  BROKEN_PIPE: 141,
} as const;

const BY_CODE: Record<ErrorCode, number> = {
  INVALID_INPUT: ExitCode.USAGE,
  NOT_FOUND: ExitCode.NOT_FOUND,
  ALREADY_EXISTS: ExitCode.CONFLICT,
  CONFLICT: ExitCode.CONFLICT,
  BUSY: ExitCode.CONFLICT,
  CORRUPT: ExitCode.CORRUPT,
  UNAVAILABLE: ExitCode.UNAVAILABLE,
  NOT_SUPPORTED: ExitCode.NOT_SUPPORTED,
  CANCELLED: ExitCode.CANCELLED,
  INTERNAL: ExitCode.INTERNAL,
};

/**
 * The exit code for an error: the family of the code it is reported with. Any other error is
 * first mapped by toCairnError (as the output does), so the exit code always follows the printed
 * code (an ENOENT prints NOT_FOUND and exits 3; an unknown error prints INTERNAL and exits 1).
 */
export function exitCodeFor(err: unknown): number {
  return BY_CODE[toCairnError(err).code];
}
