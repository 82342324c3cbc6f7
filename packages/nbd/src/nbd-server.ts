import net from 'node:net';
import { CairnError, toCairnError } from '@cairn/core';
import type { NbdAddress } from './connection.js';
import type { NbdExport } from './nbd-backend.js';
import { MAX_PAYLOAD_CAP } from './protocol.js';
import { ServerConnection } from './server-connection.js';

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
  /** A client that has not finished the handshake by then is dropped. Default 30000 ms. */
  handshakeTimeoutMs?: number;
  /** Name used in errors. Default `nbd-server`. */
  driver?: string;
}

/**
 * An NBD server (fixed newstyle, structured replies, meta contexts, block status) serving named
 * exports from NbdBackend implementations to any number of clients at once, on a unix socket or a
 * TCP address (127.0.0.1 by default).
 */
export class NbdServer {
  private readonly exports: Map<string, NbdExport>;
  private readonly server: net.Server;
  private readonly connections = new Set<ServerConnection>();
  private closing: Promise<void> | undefined;
  private bound: NbdAddress | undefined;
  private readonly driver: string;

  /** `INVALID_INPUT` for duplicate export names or bad block sizes. */
  constructor(private readonly options: NbdServerOptions) {
    this.driver = options.driver ?? 'nbd-server';
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
    this.server = net.createServer((socket) => {
      if (this.closing) {
        socket.destroy();
        return;
      }
      const conn = new ServerConnection(socket, {
        exports: this.exports,
        blockSizes,
        maxInFlight: options.maxInFlightPerConnection ?? 32,
        handshakeTimeoutMs: options.handshakeTimeoutMs ?? 30_000,
        shuttingDown: () => this.closing !== undefined,
        driver: this.driver,
      });
      this.connections.add(conn);
      void conn.closed().then(() => this.connections.delete(conn));
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

  /** Connected clients (handshaking or transmitting). */
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
      await Promise.all([...this.connections].map((c) => c.drain(options.drainTimeoutMs ?? 10_000)));
      if (this.bound) await stopped;
    })();
    return this.closing;
  }
}
