import net from 'node:net';
import { CairnError, quotedCut, toCairnError } from '@cairn/core';
import { AcceptErrorReporter } from './accept-errors.js';
import type { NbdAddress } from './connection.js';
import { FdReserve } from './fd-reserve.js';
import { SHOWN_NAME, textViolation } from './nbd-string.js';
import { PrivateSocketPath } from './private-socket.js';
import type { NbdExport } from './nbd-backend.js';
import { REP_ERR } from './protocol.js';
import { resolveBlockSizes } from './server-block-sizes.js';
import { ServerConnection } from './server-connection.js';
import type { OptionRefusal } from './server-handshake.js';
import { resolveServerLimits, type NbdServerLimits } from './server-limits.js';

export interface NbdServerOptions extends NbdServerLimits {
  /** Exports served, by unique name. */
  exports: NbdExport[];
  /**
   * Largest READ/WRITE payload accepted, advertised as the maximum block size: a multiple of
   * `minBlockSize`, from `preferredBlockSize` to 32 MiB. Default 32 MiB (also the cap).
   */
  maxPayload?: number;
  /** Advertised minimum block size: a power of 2 from 1 to 65536 (proto.md). Default 1. */
  minBlockSize?: number;
  /** Advertised preferred block size: a power of 2, at least max(`minBlockSize`, 512) (proto.md). Default 4096. */
  preferredBlockSize?: number;
  /**
   * Problems of the server itself that no caller is waiting for, as `UNAVAILABLE`, rate-limited
   * (see `AcceptErrorReporter`), instead of crashing the process: once listening, a failed
   * accept() (ENOBUFS, …) that node reports, and the process running out of file descriptors
   * (EMFILE/ENFILE, seen by the server itself since libuv does not report it; see `FdReserve`).
   * While out of descriptors every new connection is closed at once; the server keeps listening
   * and serves new clients once descriptors are free. Problems of one client go to that client
   * (NBD errors, a dropped connection), not here. Default: ignored.
   */
  onError?: (err: CairnError) => void;
  /** Name used in errors. Default `nbd-server`. */
  driver?: string;
}

/** How long a refused connection (over `maxConnections`) may take to give up before it is dropped. */
const REFUSED_TIMEOUT_MS = 2000;
/**
 * TCP keepalive on accepted TCP connections: the first probe after this long without traffic
 * (then the kernel's interval and count), so a client whose host vanished, which sends no FIN or
 * RST, is dropped by the kernel and frees its slot even with `idleTimeoutMs` 0.
 */
const KEEPALIVE_INITIAL_DELAY_MS = 60_000;

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
  /** The unix socket path listened on, to remove at close (see PrivateSocketPath). */
  private socketPath: PrivateSocketPath | undefined;
  /** While a listen() is pending: settles it with `err`, releasing what it holds. */
  private abandonListen: ((err: CairnError) => void) | undefined;
  private readonly driver: string;
  private readonly acceptErrors: AcceptErrorReporter;
  /** Sheds new connections while the process is out of descriptors, instead of spinning on accept. */
  private readonly reserve: FdReserve;

  /**
   * `INVALID_INPUT` for duplicate export names, export names that are not NBD strings (over 4096
   * bytes of UTF-8, containing NUL or a lone surrogate, `textViolation`: no client could name
   * them), block sizes proto.md forbids (see
   * `resolveBlockSizes`), an export whose size is not a multiple of `minBlockSize` (proto.md: it
   * "SHOULD be an integer multiple of that block size, since otherwise, the client would be unable
   * to access the final few bytes"; qemu's client asserts on such an export's last block, libnbd
   * refuses its block status) or bad limits (see `resolveServerLimits`); `details.option` names a
   * bad option, `details.export` an export whose size does not fit.
   */
  constructor(private readonly options: NbdServerOptions) {
    this.driver = options.driver ?? 'nbd-server';
    this.acceptErrors = new AcceptErrorReporter(options.onError ?? (() => undefined), this.driver);
    this.reserve = new FdReserve((err) =>
      this.acceptErrors.onError(
        Object.assign(new Error(`out of file descriptors (${err.code}): new connections are closed at once until some are free`), { code: err.code, syscall: 'accept' }),
      ),
    );
    this.exports = new Map();
    for (const e of options.exports) {
      if (this.exports.has(e.name)) throw new CairnError('INVALID_INPUT', `duplicate export name ${quotedCut(e.name, SHOWN_NAME)}`, { driver: this.driver });
      const violation = textViolation(e.name);
      if (violation) throw new CairnError('INVALID_INPUT', `export name ${quotedCut(e.name, SHOWN_NAME)} ${violation}`, { driver: this.driver });
      this.exports.set(e.name, e);
    }
    const blockSizes = resolveBlockSizes(options, this.driver);
    for (const e of options.exports) {
      if (e.backend.size % blockSizes.min !== 0) {
        throw new CairnError('INVALID_INPUT', `export ${quotedCut(e.name, SHOWN_NAME)} is ${e.backend.size} bytes, not a multiple of minBlockSize ${blockSizes.min}: no client could reach its last ${e.backend.size % blockSizes.min} bytes`, {
          driver: this.driver,
          details: { option: 'minBlockSize', export: e.name },
        });
      }
    }
    const limits = resolveServerLimits(options, this.driver);
    const maxConnections = limits.maxConnections;
    const shutdown = (): OptionRefusal | undefined => (this.closing ? { type: REP_ERR.SHUTDOWN, message: 'server is shutting down' } : undefined);
    const tooMany: OptionRefusal = { type: REP_ERR.POLICY, message: `too many connections (this server serves ${maxConnections} at once); try again later` };
    const handshakeTimeoutMs = limits.handshakeTimeoutMs;
    // allowHalfOpen: a client's FIN must not end our side before its requests are answered (ServerConnection).
    // keepAlive applies to TCP sockets only (node skips unix sockets).
    this.server = net.createServer({ allowHalfOpen: true, keepAlive: true, keepAliveInitialDelay: KEEPALIVE_INITIAL_DELAY_MS }, (socket) => {
      if (this.reserve.shedding) {
        socket.destroy(); // closes the descriptor now, so the next accept() has a slot
        return;
      }
      const admitted = this.connections.size < maxConnections;
      if (this.closing || (!admitted && this.refused.size >= maxConnections)) {
        socket.destroy();
        return;
      }
      const conn = new ServerConnection(socket, {
        exports: this.exports,
        blockSizes,
        maxInFlight: limits.maxInFlightPerConnection,
        maxWriteBytes: limits.maxWriteBytesPerConnection,
        maxReadBytes: limits.maxReadBytesPerConnection,
        handshakeTimeoutMs: admitted ? handshakeTimeoutMs : Math.min(handshakeTimeoutMs, REFUSED_TIMEOUT_MS),
        idleTimeoutMs: limits.idleTimeoutMs,
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
   * resolves with the bound address. A unix socket is owner-only (mode 0600, whatever the umask:
   * only this user, and root, may connect) from the moment it appears at its path (see
   * `PrivateSocketPath`: bound in a fresh 0700 directory beside it, then linked into place), and
   * `close()` removes it; `INVALID_INPUT` for a path too long for a unix socket (see there).
   * From then on the server holds one spare file descriptor (see `FdReserve`) until `close()`; a listen() that fails holds nothing, and may be retried.
   * `CONFLICT` when the address is in use; `INVALID_INPUT` for a bad address (a port outside
   * 0–65535), while listening or a listen() is pending, and after `close()` (a closed server never
   * listens again: create a new one); `CANCELLED` when `close()` is called before it bound.
   */
  listen(address: NbdAddress | { host?: string; port: number }): Promise<NbdAddress> {
    if (this.closing) return Promise.reject(new CairnError('INVALID_INPUT', 'server is closed; create a new NbdServer to listen again', { driver: this.driver }));
    if (this.bound || this.abandonListen) return Promise.reject(new CairnError('INVALID_INPUT', 'server is already listening', { driver: this.driver }));
    return new Promise((resolve, reject) => {
      let place: PrivateSocketPath | undefined;
      const fail = (err: CairnError): void => {
        this.server.off('error', onError).off('listening', done);
        place?.discard();
        this.abandonListen = undefined;
        this.reserve.stop();
        reject(err);
      };
      const onError = (err: NodeJS.ErrnoException): void => fail(listenError(err, this.driver));
      const done = (): void => {
        this.server.off('error', onError);
        // From now on an 'error' is a failed accept: reported, never an uncaught exception.
        this.server.off('error', this.onAcceptError).on('error', this.onAcceptError);
        if (this.closing) {
          this.server.close(); // bound after close() settled this listen(): nobody serves it
          place?.discard();
          return;
        }
        if (place) {
          try {
            place.publish();
          } catch (err) {
            this.server.close(); // listening on the temporary name only: nobody could reach it
            this.server.off('error', this.onAcceptError);
            fail(listenError(err, this.driver));
            return;
          }
          this.socketPath = place;
        }
        this.abandonListen = undefined;
        const a = this.server.address();
        this.bound = place ? { path: place.path } : typeof a === 'string' ? { path: a } : { host: a!.address, port: a!.port };
        resolve(this.bound);
      };
      this.abandonListen = (err) => {
        fail(err);
        this.server.off('error', this.onAcceptError).on('error', this.onAcceptError); // a late report of the abandoned listen
      };
      this.server.once('error', onError);
      this.reserve.start();
      try {
        if ('path' in address) {
          place = new PrivateSocketPath(address.path, this.driver);
          this.server.listen(place.tempPath, done);
        } else this.server.listen(address.port, address.host ?? '127.0.0.1', done);
      } catch (err) {
        fail(listenError(err, this.driver)); // thrown by net for a bad address, before any socket
      }
    });
  }

  /** The net.Server 'error' listener once listening: a failed accept (see `onError`). */
  private readonly onAcceptError = (err: NodeJS.ErrnoException): void => {
    if (err.code === 'EMFILE' || err.code === 'ENFILE') this.reserve.shortage(err);
    this.acceptErrors.onError(err);
  };

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
   * `drainTimeoutMs` (default 10000) are destroyed. Releases the spare descriptor; a pending
   * listen() fails with `CANCELLED`, and later ones with `INVALID_INPUT`. Idempotent.
   */
  close(options: { drainTimeoutMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      this.abandonListen?.(new CairnError('CANCELLED', 'server closed before listen() completed', { driver: this.driver }));
      this.reserve.stop();
      const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.socketPath?.unpublish(); // the server's close removes only the name it bound
      await Promise.all([...this.connections, ...this.refused].map((c) => c.drain(options.drainTimeoutMs ?? 10_000)));
      if (this.bound) await stopped;
    })();
    return this.closing;
  }
}

/** A failed listen() as a CairnError: `CONFLICT` for an address in use (or a socket path taken), `INVALID_INPUT` for a bad address. */
function listenError(err: unknown, driver: string): CairnError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = (err as Error | undefined)?.message ?? String(err);
  if (code === 'EADDRINUSE' || code === 'EEXIST') return new CairnError('CONFLICT', `address in use: ${message}`, { driver, cause: err });
  if (code === 'ERR_SOCKET_BAD_PORT' || code === 'ERR_INVALID_ARG_TYPE' || code === 'ERR_INVALID_ARG_VALUE') {
    return new CairnError('INVALID_INPUT', `bad listen address: ${message}`, { driver, cause: err });
  }
  return toCairnError(err, driver, 'listen');
}
