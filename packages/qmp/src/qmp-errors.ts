/**
 * Maps QMP error replies (`{"error": {"class", "desc"}}`) to CairnError codes.
 *
 * qemu 7.2 reports almost every block-layer failure as `GenericError`, so for that class the
 * description decides (first matching rule wins, case-insensitive):
 *   1. "already exists", "duplicate", "id '…' is already in use"         → ALREADY_EXISTS
 *   2. "not found", "cannot find", "failed to find", "no such file",
 *      "does not exist"                                                   → NOT_FOUND
 *   3. "inconsistent", "corrupt"  (e.g. a bitmap left by a crash)          → CORRUPT
 *   4. 'Failed to get "write" lock', 'Failed to get shared "…" lock',
 *      "Failed to lock byte N" (file-posix: another process holds the
 *      image's lock; retrying later may succeed)                           → BUSY
 *   5. "in use", "busy", "lock", "permission conflict", "already running",
 *      "is being", "currently"                                            → CONFLICT
 *   6. anything else (bad argument, wrong type, missing parameter)         → INVALID_INPUT
 * Other classes: CommandNotFound → NOT_SUPPORTED, DeviceNotFound → NOT_FOUND,
 * DeviceNotActive → NOT_FOUND, KVMMissingCap → NOT_SUPPORTED, unknown classes → INTERNAL.
 * DeviceNotActive is qemu's "the thing addressed is not there": 7.2 sends it for a block job id it
 * does not know (`Block job 'j' not found`, also for a job that has just ended), a balloon or
 * D-Bus display that is not set up; never for something present but busy.
 * The rules read qemu's own words only: what qemu quotes in single quotes (file names, node,
 * bitmap and export names, which may hold any words: '/srv/lock/…', '/data/not found/…') is left
 * out of the match. The QMP class, desc and command are kept in `details` (`qmpClass`, `qmpDesc`,
 * `command`).
 */
import { CairnError, type ErrorCode } from '@cairn/core';
import { receivedExcerpt } from './received.js';

/** Driver name used in every error raised by this package. */
export const QMP_DRIVER = 'qmp';

/** The `error` member of a QMP reply. */
export interface QmpErrorBody {
  class: string;
  desc: string;
}

const ALREADY_EXISTS = /already exists|duplicate|id '[^']*' is already in use/i;
const NOT_FOUND = /not found|cannot find|failed to find|no such file|does not exist/i;
const CORRUPT = /inconsistent|corrupt/i;
/** file-posix.c's words when another process holds the image file's lock (qemu 7.2). */
const LOCKED_ELSEWHERE = /Failed to get (?:shared )?"[a-z -]+" lock|Failed to lock byte \d+/i;
const CONFLICT = /in use|busy|\block\b|permission conflict|already running|is being|currently/i;

/** The Cairn code for a QMP error class and description (rules in the file comment). */
export function qmpErrorCode(qmpClass: string, desc: string): ErrorCode {
  switch (qmpClass) {
    case 'CommandNotFound':
    case 'KVMMissingCap':
      return 'NOT_SUPPORTED';
    case 'DeviceNotFound':
    case 'DeviceNotActive':
      return 'NOT_FOUND';
    case 'GenericError': {
      const words = desc.replace(/'[^']*'/g, "''");
      if (ALREADY_EXISTS.test(words)) return 'ALREADY_EXISTS';
      if (NOT_FOUND.test(words)) return 'NOT_FOUND';
      if (CORRUPT.test(words)) return 'CORRUPT';
      if (LOCKED_ELSEWHERE.test(words)) return 'BUSY';
      if (CONFLICT.test(words)) return 'CONFLICT';
      return 'INVALID_INPUT';
    }
    default:
      return 'INTERNAL';
  }
}

/** A CairnError for a QMP error reply to `command`. */
export function qmpError(command: string, body: QmpErrorBody, driver: string = QMP_DRIVER): CairnError {
  const qmpClass = typeof body?.class === 'string' ? body.class : 'GenericError';
  const desc = typeof body?.desc === 'string' ? body.desc : receivedExcerpt(body);
  return new CairnError(qmpErrorCode(qmpClass, desc), `${command}: ${desc}`, {
    driver,
    details: { command, qmpClass, qmpDesc: desc },
  });
}

/** UNAVAILABLE: the connection is gone, never came up, or the daemon did not answer in time. */
export function unavailable(message: string, driver: string = QMP_DRIVER, cause?: unknown, details?: Record<string, unknown>): CairnError {
  return new CairnError('UNAVAILABLE', message, { driver, cause, details });
}
