import net from 'node:net';
import { CairnError, toCairnError } from '@cairn/core';
import { AcceptErrorReporter } from './accept-errors.js';
import type { NbdAddress } from './connection.js';
import type { NbdExport } from './nbd-backend.js';
import { MAX_PAYLOAD_CAP, REP_ERR } from './protocol.js';
import { ServerConnection } from './server-connection.js';
import type { OptionRefusal } from './server-handshake.js';

export interface NbdServerOptions {
  /** Exports served, by unique name. */
  exports: NbdExport[];
  /** Largest READ/WRITE payload accepted, advertised as the maximum block size. Default 32 MiB (also the cap). */
  maxPayload?: number;
  /** Advertised minimum block size. Default 1. */
  minBlockSize?: number;
  /** Advertised preferred block size. Default 4096. */
  preferredBlockSize?: number;
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
   * whatever `maxInFlightPerConnection` allows. Separate from, and in addition to,
   * `maxWriteBytesPerConnection`. Default 64 MiB.
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
  /** A client that has not finished the handshake by then is dropped. Default 30000 ms. */
  handshakeTimeoutMs?: number;
  /**
   * Problems of the server itself that no caller is waiting for: once listening, a failed
   * accept() (EMFILE/ENFILE when out of file descriptors, ENOBUFS, …) arrives here as
   * `UNAVAILABLE`, rate-limited (see `AcceptErrorReporter`), instead of crashing the process;
   * the server keeps listening and serves new clients once the cause is gone. Problems of one
   * client go to that client (NBD errors, a dropped connection), not here. Default: ignored.
   */
  onError?: (err: CairnError) => void;
  /** Name used in errors. Default `nbd-server`. */
  driver?: string;
}

/** How long a refused connection (over `maxConnections`) may take to give up before it is dropped. */
const REFUSED_TIMEOUT_MS = 2000;

/**
 * An NBD server (fixed newstyle, structured replies, meta contexts, block status) serving named
 * exports from NbdBackend implementations to up to `maxConnections` clients at once, on a unix
 * socket or a TCP address (127.0.0.1 by default).
 *
 * It runs on this process's event loop: a synchronous call that blocks the loop (execFileSync,
 * spawnSync, a long computation) stalls every client, and a client started that way against this
 * server (`execFileSync('nbdcopy', …)`) waits for the greeting until the call times out. Run
 * clients asynchronously (execFile, spawn) or in another process.
 */
export class NbdServer {
  private readonly exports: Map<string, NbdExport>;
  private readonly server: net.Server;
  /** Admitted connections (at most `maxConnections`). */
  private readonly connections = new Set<ServerConnection>();
  /** Connections over the limit, being refused. */
  private readonly refused = new Set<ServerConnection>();
  private closing: Promise<void> | undefined;
  private bound: NbdAddress | undefined;
  private readonly driver: string;
  private readonly acceptErrors: AcceptErrorReporter;

  /** `INVALID_INPUT` for duplicate export names, bad block sizes or bad limits. */
  constructor(private readonly options: NbdServerOptions) {
    this.driver = options.driver ?? 'nbd-server';
    this.acceptErrors = new AcceptErrorReporter(options.onError ?? (() => undefined), this.driver);
    this.exports = new Map();
    for (const e of options.exports) {
      if (this.exports.has(e.name)) throw new CairnError('INVALID_INPUT', `duplicate export name ${JSON.stringify(e.name)}`, { driver: this.driver });
      this.exports.set(e.name, e);
    }
    const max = options.maxPayload ?? MAX_PAYLOAD_CAP;
    const min = options.minBlockSize ?? 1;
    const preferred = options.preferredBlockSize ?? 4096;
    if (!(min >= 1 && min <= preferred && preferred <= max && max <= MAX_PAYLOAD_CAP)) {
      throw new CairnError('INVALID_INPUT', `block sizes must satisfy 1 ≤ min ≤ preferred ≤ max ≤ 32 MiB`, { driver: this.driver });
    }
    const blockSizes = { min, preferred, max };
    const maxConnections = options.maxConnections ?? 16;
    const maxWriteBytes = options.maxWriteBytesPerConnection ?? 64 * 1024 * 1024;
    const maxReadBytes = options.maxReadBytesPerConnection ?? 64 * 1024 * 1024;
    const limits = [
      ['maxConnections', maxConnections],
      ['maxWriteBytesPerConnection', maxWriteBytes],
      ['maxReadBytesPerConnection', maxReadBytes],
    ] as const;
    for (const [name, v] of limits) {
      if (!Number.isSafeInteger(v) || v < 1) throw new CairnError('INVALID_INPUT', `${name} must be a positive integer, not ${v}`, { driver: this.driver });
    }
    const shutdown = (): OptionRefusal | undefined => (this.closing ? { type: REP_ERR.SHUTDOWN, message: 'server is shutting down' } : undefined);
    const tooMany: OptionRefusal = { type: REP_ERR.POLICY, message: `too many connections (this server serves ${maxConnections} at once); try again later` };
    const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 30_000;
    this.server = net.createServer((socket) => {
      const admitted = this.connections.size < maxConnections;
      if (this.closing || (!admitted && this.refused.size >= maxConnections)) {
        socket.destroy();
        return;
      }
      const conn = new ServerConnection(socket, {
        exports: this.exports,
        blockSizes,
        maxInFlight: options.maxInFlightPerConnection ?? 32,
        maxWriteBytes,
        maxReadBytes,
        handshakeTimeoutMs: admitted ? handshakeTimeoutMs : Math.min(handshakeTimeoutMs, REFUSED_TIMEOUT_MS),
        refusal: admitted ? shutdown : () => shutdown() ?? tooMany,
        driver: this.driver,
      });
      const set = admitted ? this.connections : this.refused;
      set.add(conn);
      void conn.closed().then(() => set.delete(conn));
    });
  }

  /**
   * Starts listening on a unix socket path or a TCP address (port 0 picks a free port) and
   * resolves with the bound address. `CONFLICT` when the address is in use.
   */
  listen(address: NbdAddress | { host?: string; port: number }): Promise<NbdAddress> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const code = err.code === 'EADDRINUSE' ? 'CONFLICT' : undefined;
        reject(code ? new CairnError(code, `address in use: ${err.message}`, { driver: this.driver, cause: err }) : toCairnError(err, this.driver, 'listen'));
      };
      this.server.once('error', onError);
      const done = (): void => {
        this.server.off('error', onError);
        // From now on an 'error' is a failed accept: reported, never an uncaught exception.
        this.server.off('error', this.acceptErrors.onError).on('error', this.acceptErrors.onError);
        const a = this.server.address();
        this.bound = typeof a === 'string' ? { path: a } : { host: a!.address, port: a!.port };
        resolve(this.bound);
      };
      if ('path' in address) this.server.listen(address.path, done);
      else this.server.listen(address.port, address.host ?? '127.0.0.1', done);
    });
  }

  /** The bound address, once listening. */
  get address(): NbdAddress | undefined {
    return this.bound;
  }

  /** Admitted clients (handshaking or transmitting); refused ones are not counted. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Stops accepting, refuses further options with NBD_REP_ERR_SHUTDOWN, lets every connection
   * finish the requests it is handling, then disconnects it; connections still busy after
   * `drainTimeoutMs` (default 10000) are destroyed. Idempotent.
   */
  close(options: { drainTimeoutMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
      await Promise.all([...this.connections, ...this.refused].map((c) => c.drain(options.drainTimeoutMs ?? 10_000)));
      if (this.bound) await stopped;
    })();
    return this.closing;
  }
}
