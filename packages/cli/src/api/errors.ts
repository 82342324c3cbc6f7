import { CairnError, isCairnError, toCairnError, type ErrorCode } from '@cairn/core';

/**
 * Codes of errors that come from HTTP itself rather than from Cairn. Every error body's `code`
 * is a CairnError code or one of these; both lists are stable (docs/api.md, "Errors").
 */
export const TransportCodes = ['UNAUTHENTICATED', 'METHOD_NOT_ALLOWED', 'REQUEST_TIMEOUT', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'HEADERS_TOO_LARGE'] as const;
export type TransportCode = (typeof TransportCodes)[number];
export type ApiErrorCode = ErrorCode | TransportCode;

/**
 * THE table: HTTP status of every error code. CairnError codes keep their meaning; the status
 * only tells HTTP clients and proxies which family the failure is in.
 * - NOT_SUPPORTED is 422: the request is well formed but the configured driver or target lacks
 *   the capability; it is not a server fault and repeating it will not help.
 * - CORRUPT is 500: stored data failed its checks; the client did nothing wrong.
 * - CANCELLED is 409: the operation was stopped by a cancel; it mostly appears inside job views.
 */
export const HTTP_STATUS: Record<ApiErrorCode, number> = {
  INVALID_INPUT: 400,
  UNAUTHENTICATED: 401,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  REQUEST_TIMEOUT: 408,
  ALREADY_EXISTS: 409,
  CONFLICT: 409,
  BUSY: 409,
  CANCELLED: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  NOT_SUPPORTED: 422,
  HEADERS_TOO_LARGE: 431,
  INTERNAL: 500,
  CORRUPT: 500,
  UNAVAILABLE: 503,
};

/** Seconds a client should wait before repeating a request that failed with a retryable code. */
export const RETRY_AFTER_SECONDS = 5;
const RETRYABLE: ReadonlySet<ApiErrorCode> = new Set(['BUSY', 'UNAVAILABLE']);

/** An error raised by the HTTP layer (auth, routing, body parsing) with a transport code. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly code: TransportCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The one error body of the API. `details` is present when the error carries any. */
export interface ErrorBody {
  error: { code: ApiErrorCode; message: string; details?: Record<string, unknown> };
}

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: ErrorBody;
}

/**
 * Fastify's own errors (`FST_ERR_*`, from body parsing and limits) as API codes. Their messages
 * are replaced by ours, which say what to send instead.
 */
const FRAMEWORK: Record<string, { code: ApiErrorCode; message: string; details?: Record<string, unknown> }> = {
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'INVALID_INPUT', message: 'the request body is not valid JSON' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'INVALID_INPUT', message: 'the request body is empty but Content-Type is application/json' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'INVALID_INPUT', message: 'the request body does not match its Content-Length' },
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'PAYLOAD_TOO_LARGE', message: 'the request body is larger than the server accepts' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'request bodies must be JSON (Content-Type: application/json)' },
  // A path whose percent-encoding does not decode (`%zz`, a lone `%`, bytes that are not UTF-8):
  // a `%` in an id or a metadata key is sent as `%25`.
  FST_ERR_BAD_URL: { code: 'INVALID_INPUT', message: 'the request URL is malformed: its percent-encoding does not decode (send a % as %25)', details: { reason: 'malformed_url' } },
  // A path segment longer than the router matches (MAX_PARAM_LENGTH): no id or name is that long.
  FST_ERR_MAX_PARAM_LENGTH: { code: 'NOT_FOUND', message: 'no such resource: a path segment is longer than any id or name' },
};

/**
 * Turns anything a handler or the framework threw into the API's response: status from
 * HTTP_STATUS, the stable code, the message and details (never a cause or a stack: causes may
 * name secret files), and `Retry-After` for BUSY and UNAVAILABLE. An unknown error is INTERNAL.
 */
export function errorResponse(err: unknown): ErrorResponse {
  let code: ApiErrorCode;
  let message: string;
  let details: Record<string, unknown> | undefined;
  const headers: Record<string, string> = {};
  if (err instanceof HttpError) {
    ({ code, message } = err);
    Object.assign(headers, err.headers);
  } else if (isCairnError(err)) {
    ({ code, message, details } = err);
  } else {
    const fst = FRAMEWORK[String((err as { code?: unknown })?.code)];
    const status = (err as { statusCode?: unknown })?.statusCode;
    if (fst) ({ code, message, details } = fst);
    else if (typeof status === 'number' && status >= 400 && status < 500) (code = 'INVALID_INPUT'), (message = (err as Error).message);
    else ({ code, message, details } = toCairnError(err));
  }
  if (RETRYABLE.has(code)) headers['retry-after'] = String(RETRY_AFTER_SECONDS);
  const body: ErrorBody = { error: { code, message } };
  if (details && Object.keys(details).length > 0) body.error.details = details;
  return { status: HTTP_STATUS[code], headers, body };
}

/**
 * What Node's HTTP parser refused before any route saw the request (the server's `clientError`):
 * a request whose headers or body did not arrive within the request timeout (REQUEST_TIMEOUT),
 * headers larger than Node accepts (HEADERS_TOO_LARGE), anything else that is not HTTP
 * (INVALID_INPUT). The answer has the API's one error shape; the connection is then closed.
 */
export function clientErrorResponse(err: unknown): ErrorResponse {
  const code = (err as { code?: unknown })?.code;
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return errorResponse(new HttpError('REQUEST_TIMEOUT', 'the request did not arrive within the request timeout'));
  if (code === 'HPE_HEADER_OVERFLOW') return errorResponse(new HttpError('HEADERS_TOO_LARGE', 'the request line and headers are larger than the server accepts'));
  return errorResponse(new CairnError('INVALID_INPUT', 'the request is not valid HTTP'));
}

/**
 * Whether an error answered with `status` goes to the operator (`onServerError`) besides the
 * client: every 5xx except an UNAVAILABLE with no system error behind it (the server shutting
 * down, a job that would not stop: the client retries and nothing needs fixing). An UNAVAILABLE
 * caused by the system (EACCES on a volumes directory, ENOSPC, EIO) is a fault someone must fix.
 */
export function forOperator(err: unknown, status: number): boolean {
  if (status < 500) return false;
  if (!isCairnError(err) || err.code !== 'UNAVAILABLE') return true;
  for (let c: unknown = err; c; c = (c as { cause?: unknown }).cause) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return true;
  }
  return false;
}

/** A CairnError (or any error) as the `{code, message, details?}` object job views carry. */
export function errorJson(err: unknown): ErrorBody['error'] {
  return errorResponse(err).body.error;
}
