import { CairnError } from '@cairn/core';

/**
 * The budgets and timeouts of an NbdServer, as options (each documented on `NbdServerOptions`,
 * which extends this). `serveBackup` passes the same options through.
 */
export interface NbdServerLimits {
  /** Requests handled at once per connection before it stops reading. Default 32. */
  maxInFlightPerConnection?: number;
  /**
   * Bytes of WRITE payloads one connection may hold at once (being received, or waiting for the
   * backend) before it stops reading from its socket until writes finish. A write is always taken
   * when no other is held, so the bound is max(this, `maxPayload`). Default 64 MiB.
   */
  maxWriteBytesPerConnection?: number;
  /**
   * Bytes of READ replies one connection may hold at once, each counted as the length its READ
   * asked for from when the read starts until the reply's last byte left the socket's write
   * buffer (the client read it, or the kernel buffers it). A READ that would exceed it waits,
   * and the connection reads no further requests, until earlier replies flush; one is always
   * started when no other is held, so the bound is max(this, `maxPayload`). A client that
   * pipelines large reads and reads replies slowly (or never) thus holds no more than this,
   * whatever `maxInFlightPerConnection` allows. BLOCK_STATUS replies count too, each as the
   * largest reply it can get until built, then as its size (reply-bound.ts). Separate from, and
   * in addition to, `maxWriteBytesPerConnection`. Default 64 MiB.
   */
  maxReadBytesPerConnection?: number;
  /**
   * Clients served at once (handshaking or transmitting). A connection beyond the limit is refused
   * within the protocol: it gets the greeting, every option but NBD_OPT_ABORT is answered with
   * NBD_REP_ERR_POLICY "too many connections", NBD_OPT_EXPORT_NAME gets a disconnect, and it is
   * dropped after at most 2 s. At most `maxConnections` refused connections are kept at once;
   * beyond that, new connections are closed at once, before the greeting. Default 16.
   */
  maxConnections?: number;
  /**
   * A client that has not finished the handshake this many ms after connecting is dropped
   * (once it has, `idleTimeoutMs` applies). Default 30000.
   */
  handshakeTimeoutMs?: number;
  /**
   * A client past the handshake that has no request in flight (received and not yet answered,
   * or waiting to start) and from which nothing was received, and to which nothing was sent, for
   * this many ms is disconnected (its socket destroyed), freeing its slot of `maxConnections`.
   * A request in flight, however long the backend takes, keeps the connection. 0: none, a silent
   * client is kept for ever (TCP clients still get keepalive probes: a peer whose host vanished
   * is dropped when they fail). Default 600000 (10 minutes).
   */
  idleTimeoutMs?: number;
}

/** `NbdServerLimits` with every default applied. */
export type ResolvedServerLimits = Required<NbdServerLimits>;

/** Longest timer node keeps (2^31 - 1 ms, about 24.8 days); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The limits with their defaults. `INVALID_INPUT` (tagged `driver`) when one is not a whole
 * number from 1 up (`idleTimeoutMs` from 0; the timeouts at most 2^31 - 1). Pure: safe to call
 * before acquiring anything.
 */
export function resolveServerLimits(options: NbdServerLimits, driver: string): ResolvedServerLimits {
  const limits: ResolvedServerLimits = {
    maxInFlightPerConnection: options.maxInFlightPerConnection ?? 32,
    maxWriteBytesPerConnection: options.maxWriteBytesPerConnection ?? 64 * 1024 * 1024,
    maxReadBytesPerConnection: options.maxReadBytesPerConnection ?? 64 * 1024 * 1024,
    maxConnections: options.maxConnections ?? 16,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 30_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 600_000,
  };
  for (const [name, v] of Object.entries(limits)) {
    const timer = name === 'handshakeTimeoutMs' || name === 'idleTimeoutMs';
    const min = name === 'idleTimeoutMs' ? 0 : 1;
    const max = timer ? MAX_TIMER_MS : Number.MAX_SAFE_INTEGER;
    if (!Number.isSafeInteger(v) || v < min || v > max) {
      throw new CairnError('INVALID_INPUT', `${name} must be a whole number from ${min} to ${max}, not ${v}`, { driver, details: { option: name } });
    }
  }
  return limits;
}
