import { millisecondsFromEnv } from '../config/env-milliseconds.js';
import { MAX_WAIT_SECONDS } from './routes-jobs.js';

/**
 * Connection limits (ms). A request (headers and body) must arrive within `requestTimeoutMs`; a
 * connection with no traffic either way for `connectionTimeoutMs` is closed (a long-poll waits
 * less than that, see longestWaitMs, so a waiting client is answered, not cut);
 * an idle keep-alive connection is closed after `keepAliveTimeoutMs`; at shutdown, connections
 * still open `drainTimeoutMs` after the jobs settled are closed (whatever they were doing).
 */
export interface ApiServerTimeouts {
  requestTimeoutMs: number;
  connectionTimeoutMs: number;
  keepAliveTimeoutMs: number;
  drainTimeoutMs: number;
}

/** Defaults: bodies get 60 s, long-polls up to MAX_WAIT_SECONDS plus 30 s of quiet, shutdown drains 10 s. */
export const DEFAULT_TIMEOUTS: ApiServerTimeouts = {
  requestTimeoutMs: 60_000,
  connectionTimeoutMs: (MAX_WAIT_SECONDS + 30) * 1000,
  keepAliveTimeoutMs: 5_000,
  drainTimeoutMs: 10_000,
};

/** Environment variables that override DEFAULT_TIMEOUTS (milliseconds), documented in docs/api.md. */
export const TIMEOUT_ENV: Record<keyof ApiServerTimeouts, string> = {
  requestTimeoutMs: 'CAIRN_SERVE_REQUEST_TIMEOUT_MS',
  connectionTimeoutMs: 'CAIRN_SERVE_CONNECTION_TIMEOUT_MS',
  keepAliveTimeoutMs: 'CAIRN_SERVE_KEEPALIVE_TIMEOUT_MS',
  drainTimeoutMs: 'CAIRN_SERVE_DRAIN_TIMEOUT_MS',
};

/**
 * The timeouts set in `env` (unset ones are left out); `INVALID_INPUT` for a value that is not a
 * whole number from 1 to 3600000 in decimal digits (millisecondsFromEnv).
 */
export function timeoutsFromEnv(env: NodeJS.ProcessEnv): Partial<ApiServerTimeouts> {
  return millisecondsFromEnv(env, TIMEOUT_ENV, 3_600_000);
}

/**
 * The longest a long-poll (`?wait=`) waits on a server with `timeouts` (ms): MAX_WAIT_SECONDS, or
 * less when the connection timeout is shorter, so that the poll is answered (its job still
 * `running`) up to 1 s (at most half the timeout) before the timeout would cut its connection
 * without an answer. With DEFAULT_TIMEOUTS, MAX_WAIT_SECONDS.
 */
export function longestWaitMs(timeouts: Pick<ApiServerTimeouts, 'connectionTimeoutMs'>): number {
  const { connectionTimeoutMs } = timeouts;
  return Math.min(MAX_WAIT_SECONDS * 1000, connectionTimeoutMs - Math.min(1000, Math.floor(connectionTimeoutMs / 2)));
}
