import { isCairnError, type ErrorCode } from '@cairn/core';

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

/** The exit code for an error: its CairnError code's family, or 1 for anything else. */
export function exitCodeFor(err: unknown): number {
  return isCairnError(err) ? BY_CODE[err.code] : ExitCode.INTERNAL;
}
