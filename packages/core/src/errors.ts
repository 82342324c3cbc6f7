/**
 * One error type for all of Cairn. Callers branch on `code`, never on message text.
 * Every driver tags its errors with its name, so a message always says who failed. A cancel is
 * the exception: work ended by an aborted signal whose reason is a `CANCELLED` CairnError throws
 * that reason itself (cancelledError), in the canceller's words ("backup cancelled by SIGINT").
 */

/** Stable error codes. Adding a code is a minor change; renaming one is a breaking change. */
export const ErrorCodes = [
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'NOT_SUPPORTED',
  'INVALID_INPUT',
  'CONFLICT',
  'BUSY',
  'CORRUPT',
  'UNAVAILABLE',
  'CANCELLED',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

/** Codes for which the same call may succeed if repeated later. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set(['BUSY', 'UNAVAILABLE']);

export interface CairnErrorOptions {
  /** Name of the driver, service or component that raised the error (e.g. `volume-file`). */
  driver?: string;
  /** The underlying error, kept for diagnostics. */
  cause?: unknown;
  /** Structured details (ids, sizes) safe to log; never secrets. */
  details?: Record<string, unknown>;
}

export class CairnError extends Error {
  override readonly name = 'CairnError';
  readonly code: ErrorCode;
  readonly driver: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: CairnErrorOptions = {}) {
    super(options.driver ? `[${options.driver}] ${message}` : message, { cause: options.cause });
    this.code = code;
    this.driver = options.driver;
    this.details = options.details;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, driver: this.driver, details: this.details };
  }
}

/**
 * True for a CairnError, including one from another copy of this package (two builds of core
 * loaded side by side): recognized by name and a known code, not only by class identity.
 */
export function isCairnError(err: unknown): err is CairnError {
  if (err instanceof CairnError) return true;
  const e = err as { name?: unknown; code?: unknown } | null;
  return !!e && e.name === 'CairnError' && (ErrorCodes as readonly unknown[]).includes(e.code);
}

export function hasCode(err: unknown, code: ErrorCode): boolean {
  return isCairnError(err) && err.code === code;
}

export const isNotFound = (err: unknown): boolean => hasCode(err, 'NOT_FOUND');
export const isAlreadyExists = (err: unknown): boolean => hasCode(err, 'ALREADY_EXISTS');
export const isNotSupported = (err: unknown): boolean => hasCode(err, 'NOT_SUPPORTED');
export const isConflict = (err: unknown): boolean => hasCode(err, 'CONFLICT');
export const isCorrupt = (err: unknown): boolean => hasCode(err, 'CORRUPT');
export const isCancelled = (err: unknown): boolean => hasCode(err, 'CANCELLED');

/** What `lookup` resolves with, or undefined when it fails with `NOT_FOUND`; any other failure is passed on. */
export function unlessNotFound<T>(lookup: Promise<T>): Promise<T | undefined> {
  return lookup.catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
}

/** True when repeating the call later may succeed (`BUSY`, `UNAVAILABLE`). */
export function isRetryable(err: unknown): boolean {
  return isCairnError(err) && RETRYABLE.has(err.code);
}

/**
 * Wraps any thrown value as a CairnError. A CairnError passes through unchanged; an AbortError
 * becomes `CANCELLED`; Node system errors map to the closest code (ENOENT → NOT_FOUND,
 * EEXIST → ALREADY_EXISTS, ENOSPC/EDQUOT/EMFILE/ENFILE → UNAVAILABLE, ECONNREFUSED/ECONNRESET → UNAVAILABLE,
 * EBUSY/EAGAIN → BUSY, EINVAL/EISDIR/ENOTDIR/ENAMETOOLONG → INVALID_INPUT); anything else becomes
 * `INTERNAL`.
 */
export function toCairnError(err: unknown, driver?: string, context?: string): CairnError {
  if (isCairnError(err)) return err;
  const prefix = context ? `${context}: ` : '';
  const e = err as { name?: string; code?: string; message?: string } | undefined;
  if (e?.name === 'AbortError') return new CairnError('CANCELLED', `${prefix}operation cancelled`, { driver, cause: err });
  const sys = typeof e?.code === 'string' ? SYSTEM_CODES[e.code] : undefined;
  const message = `${prefix}${e?.message ?? String(err)}`;
  return new CairnError(sys ?? 'INTERNAL', message, { driver, cause: err });
}

const SYSTEM_CODES: Record<string, ErrorCode> = {
  ENOENT: 'NOT_FOUND',
  EEXIST: 'ALREADY_EXISTS',
  ENOTEMPTY: 'CONFLICT',
  ENOSPC: 'UNAVAILABLE',
  EDQUOT: 'UNAVAILABLE',
  EROFS: 'UNAVAILABLE',
  EIO: 'UNAVAILABLE',
  EMFILE: 'UNAVAILABLE', // no file descriptor left in the process: retryable once other work closes some
  ENFILE: 'UNAVAILABLE', // nor in the host
  EACCES: 'UNAVAILABLE', // no permission: the storage is not usable by this process
  EPERM: 'UNAVAILABLE',
  ECONNREFUSED: 'UNAVAILABLE',
  ECONNRESET: 'UNAVAILABLE',
  ETIMEDOUT: 'UNAVAILABLE',
  EPIPE: 'UNAVAILABLE',
  EHOSTUNREACH: 'UNAVAILABLE',
  EBUSY: 'BUSY',
  EAGAIN: 'BUSY',
  EWOULDBLOCK: 'BUSY',
  EINVAL: 'INVALID_INPUT',
  EISDIR: 'INVALID_INPUT', // a directory where a file is meant
  ENOTDIR: 'INVALID_INPUT', // a file where a directory is meant
  ENAMETOOLONG: 'INVALID_INPUT',
  ELOOP: 'INVALID_INPUT', // a path through a symbolic link loop
  ENOTSUP: 'NOT_SUPPORTED',
  EOPNOTSUPP: 'NOT_SUPPORTED',
};

/** How cancelledError builds its error. */
export interface CancelledErrorOptions {
  /** Message of a new error; default `operation cancelled`. */
  message?: string;
  /** Tags a new error (CairnError's `driver`); a reason passed on keeps its own. */
  driver?: string;
  /**
   * Which reasons are passed on as they are: `cancelled` (the default) a CairnError `CANCELLED`;
   * `any` every CairnError, whatever its code (for a wait whose contract is to end with the
   * canceller's own error, e.g. a connection lost as `UNAVAILABLE`).
   */
  keep?: 'cancelled' | 'any';
}

/**
 * The error for work ended by an aborted `signal`: its reason itself when that is a CairnError
 * `keep` passes on (the canceller's own words, e.g. "backup cancelled by SIGINT"), else a new
 * `CANCELLED` (`message`, tagged `driver`) whose cause is the reason. Never throws.
 */
export function cancelledError(signal: AbortSignal, options: CancelledErrorOptions = {}): CairnError {
  const { message = 'operation cancelled', driver, keep = 'cancelled' } = options;
  const reason: unknown = signal.reason;
  if (isCairnError(reason) && (keep === 'any' || reason.code === 'CANCELLED')) return reason;
  return new CairnError('CANCELLED', message, { driver, cause: reason });
}

/** Throws `CANCELLED` (cancelledError) if the signal is aborted. Call between units of work. */
export function throwIfAborted(signal: AbortSignal | undefined, driver?: string): void {
  if (signal?.aborted) throw cancelledError(signal, { driver });
}
