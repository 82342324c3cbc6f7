import { CairnError, escapedCut, type ErrorCode } from '@cairn/core';
import { SHOWN_MESSAGE } from './nbd-string.js';
import { NBD_ERR, REP_ERR } from './protocol.js';

/** Driver name used in errors raised by this package unless a caller passes its own. */
export const NBD_DRIVER = 'nbd';

/**
 * NBD error value in a reply → CairnError code.
 * - EPERM → INVALID_INPUT (a write or trim on a read-only export)
 * - EINVAL, EOVERFLOW → INVALID_INPUT (bad range, unknown command, oversize request)
 * - ENOTSUP → NOT_SUPPORTED
 * - EIO → UNAVAILABLE: the server says nothing about the data being wrong, only that it could
 *   not serve it now; a CORRUPT verdict is the server's backend's to make, not the wire's.
 * - ENOSPC, ENOMEM, ESHUTDOWN → UNAVAILABLE (retryable later or elsewhere)
 * - anything else → UNAVAILABLE
 */
export function nbdErrorCode(errno: number): ErrorCode {
  switch (errno) {
    case NBD_ERR.EPERM:
    case NBD_ERR.EINVAL:
    case NBD_ERR.EOVERFLOW:
      return 'INVALID_INPUT';
    case NBD_ERR.ENOTSUP:
      return 'NOT_SUPPORTED';
    default:
      return 'UNAVAILABLE';
  }
}

const ERRNO_NAMES = new Map<number, string>(Object.entries(NBD_ERR).map(([k, v]) => [v, k]));

/** Symbolic name of an NBD error value (`EPERM`), or `errno <n>`. */
export function nbdErrorName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

/**
 * A CairnError for an NBD error reply; `details.nbdError` holds the raw value. The server's message
 * (up to 4096 bytes from an error chunk) is shown cut to `SHOWN_MESSAGE` code points, its control,
 * separator and bidi characters escaped, unquoted (core's escapedCut): it cannot break the line of a
 * log or an API response that carries the error.
 */
export function nbdReplyError(errno: number, what: string, serverMessage?: string, driver = NBD_DRIVER): CairnError {
  const text = serverMessage ? `: ${escapedCut(serverMessage, SHOWN_MESSAGE)}` : '';
  return new CairnError(nbdErrorCode(errno), `${what} failed with ${nbdErrorName(errno)}${text}`, {
    driver,
    details: { nbdError: errno, nbdErrorName: nbdErrorName(errno) },
  });
}

/**
 * CairnError (or anything thrown by a server backend) → NBD error value for the reply.
 * INVALID_INPUT → EINVAL, NOT_SUPPORTED → EINVAL, CORRUPT → EIO, UNAVAILABLE → EIO,
 * everything else → EIO. Never ENOTSUP: proto.md says the server "SHOULD NOT return NBD_ENOTSUP
 * except as documented in response to NBD_CMD_WRITE_ZEROES when NBD_CMD_FLAG_FAST_ZERO is
 * supported" (this server does not offer fast zero). A request the backend cannot serve as asked
 * is the client's to change, not to retry, so EINVAL (which proto.md also tells clients to assume
 * for an unexpected value) rather than EIO (our client reads EIO as retryable, `UNAVAILABLE`).
 */
export function toNbdErrno(err: unknown): number {
  const code = err instanceof CairnError ? err.code : undefined;
  switch (code) {
    case 'INVALID_INPUT':
    case 'NOT_SUPPORTED':
      return NBD_ERR.EINVAL;
    default:
      return NBD_ERR.EIO;
  }
}

/** Option-reply error type (NBD_REP_ERR_*) → CairnError code. */
export function optionErrorCode(rep: number): ErrorCode {
  switch (rep) {
    case REP_ERR.UNKNOWN:
      return 'NOT_FOUND';
    case REP_ERR.UNSUP:
    case REP_ERR.TLS_REQD:
    case REP_ERR.BLOCK_SIZE_REQD:
      return 'NOT_SUPPORTED';
    case REP_ERR.POLICY:
    case REP_ERR.INVALID:
    case REP_ERR.TOO_BIG:
      return 'INVALID_INPUT';
    default:
      return 'UNAVAILABLE';
  }
}

/** A protocol violation by the peer: the connection cannot be trusted any more. */
export function protocolError(message: string, driver = NBD_DRIVER): CairnError {
  return new CairnError('CORRUPT', `protocol violation: ${message}`, { driver });
}

/** The connection is gone; every request on it fails with this. */
export function connectionLost(message: string, driver = NBD_DRIVER, cause?: unknown): CairnError {
  return new CairnError('UNAVAILABLE', message, { driver, cause });
}
