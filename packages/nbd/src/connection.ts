import net from 'node:net';
import { CairnError, onDeadline } from '@cairn/core';
import { ByteReader } from './byte-reader.js';
import { connectionLost } from './error-map.js';

/** Where an NBD server listens: a unix socket path, or a TCP host and port. */
export type NbdAddress = { path: string } | { host: string; port: number };

/** How long `release` waits for the server to hang up before destroying the socket (1 s). */
const RELEASE_GRACE_MS = 1000;

/** Size of the reused socket receive buffer (256 KiB). */
const RECEIVE_BUFFER = 256 * 1024;

/**
 * A client socket whose incoming bytes go first to a ByteReader (handshake) and later to a
 * synchronous consumer (transmission). Bytes are received into one reused buffer, so consumers
 * must copy what they keep.
 */
export class ClientConnection {
  readonly reader = new ByteReader();
  private consumer: ((chunk: Buffer) => void) | undefined;
  private closedError: CairnError | undefined;
  private readonly closeHandlers: Array<(err: CairnError) => void> = [];
  /** Set by `release`: incoming bytes are dropped until the socket is gone. */
  private releasing = false;

  private constructor(
    readonly socket: net.Socket,
    private readonly driver: string,
  ) {}

  /** Connects; `UNAVAILABLE` when nothing listens there or the connection is not made within `timeoutMs`. */
  static open(address: NbdAddress, driver: string, timeoutMs: number): Promise<ClientConnection> {
    return new Promise((resolve, reject) => {
      let conn: ClientConnection | undefined = undefined;
      const onread = {
        buffer: Buffer.allocUnsafe(RECEIVE_BUFFER),
        callback: (n: number, buf: Uint8Array): boolean => {
          conn?.onData(Buffer.from(buf.buffer, buf.byteOffset, n));
          return true;
        },
      };
      const socket =
        'path' in address
          ? net.connect({ path: address.path, onread })
          : net.connect({ host: address.host, port: address.port, onread, noDelay: true });
      conn = new ClientConnection(socket, driver);
      const c = conn;
      // A connection already made when the deadline passes wins (onDeadline: the event loop may have been held up).
      const cancelDeadline = onDeadline(timeoutMs, () => socket.destroy(connectionLost(`connect timed out after ${timeoutMs} ms`, driver)));
      socket.once('connect', () => {
        cancelDeadline();
        socket.off('error', onConnectError);
        socket.on('error', () => undefined); // reported through 'close'
        resolve(c);
      });
      const onConnectError = (err: Error): void => {
        cancelDeadline();
        reject(connectionLost(`cannot connect to ${describe(address)}: ${err.message}`, driver, err));
      };
      socket.once('error', onConnectError);
      socket.once('close', () => c.onClose());
    });
  }

  /** Routes later bytes to `consumer` (handing over anything the handshake left buffered). */
  startTransmission(consumer: (chunk: Buffer) => void): void {
    this.consumer = consumer;
    const rest = this.reader.drain();
    if (rest.length > 0) consumer(rest);
  }

  /**
   * Runs `phase` (greeting and option haggling) under a deadline: when it has not settled within
   * `ms`, the connection is aborted with `UNAVAILABLE` ("<what> timed out after <ms> ms"); that
   * also fails the read `phase` waits on, so `phase` rejects with the same error. Bytes already
   * received when the deadline passes (the event loop was held up) are handed to `phase` first
   * (onDeadline): a phase they complete succeeds.
   */
  async within<T>(ms: number, what: string, phase: () => Promise<T>): Promise<T> {
    const cancelDeadline = onDeadline(ms, () => this.abort(connectionLost(`${what} timed out after ${ms} ms`, this.driver)));
    try {
      return await phase();
    } finally {
      cancelDeadline();
    }
  }

  /**
   * Calls `handler` once with the reason when the connection ends: at `abort`, or when the socket
   * closes; at once when it has already ended.
   */
  onClosed(handler: (err: CairnError) => void): void {
    if (this.closedError) handler(this.closedError);
    else this.closeHandlers.push(handler);
  }

  /**
   * Tears the connection down with `err` as the reason every waiter sees, and that is final at
   * once: the close handlers and the pending handshake read get `err` before this returns, and no
   * byte is passed on after it. (The consumer must itself stop on the rest of a chunk it is
   * being given when this is called from within it.) Idempotent: the first reason wins.
   */
  abort(err: CairnError): void {
    if (this.closedError) return;
    this.closedError = err;
    this.socket.destroy();
    this.ended(err);
  }

  /**
   * Lets go of a connection the caller is done with (after NBD_OPT_ABORT, or a failed option
   * exchange): sends FIN, from now on drops whatever the server still sends (including what the
   * handshake reader holds), and destroys the socket once the server hung up or after `graceMs`,
   * whichever comes first. So a server that ignores NBD_OPT_ABORT, never hangs up or keeps
   * sending holds neither the socket nor memory of this process. Idempotent; nothing once ended.
   */
  release(graceMs = RELEASE_GRACE_MS): void {
    if (this.closedError || this.releasing) return;
    this.releasing = true;
    this.reader.drain();
    this.socket.end();
    const timer = setTimeout(() => this.abort(connectionLost('connection released by the client', this.driver)), graceMs);
    this.onClosed(() => clearTimeout(timer));
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Why the connection ended, once it has. */
  get error(): CairnError | undefined {
    return this.closedError;
  }

  private onData(chunk: Buffer): void {
    if (this.closedError || this.releasing) return;
    if (!this.consumer) {
      this.reader.push(chunk);
      return;
    }
    try {
      this.consumer(chunk);
    } catch (err) {
      this.abort(err instanceof CairnError ? err : connectionLost(`reply handling failed: ${String(err)}`, this.driver, err));
    }
  }

  private onClose(): void {
    this.closedError ??= connectionLost('connection to the NBD server was lost', this.driver);
    this.ended(this.closedError);
  }

  /** Fails the handshake reader and runs the close handlers not yet run. */
  private ended(err: CairnError): void {
    this.reader.fail(err);
    for (const h of this.closeHandlers.splice(0)) h(err);
  }
}

export function describe(address: NbdAddress): string {
  return 'path' in address ? `unix:${address.path}` : `${address.host}:${address.port}`;
}
