import type { Server, Socket } from 'node:net';

/** Default `--max-connections`: far more than backup software opens, far fewer than the server's file descriptors. */
export const DEFAULT_MAX_CONNECTIONS = 256;

/** What `GET /v1/health` reports of the connections. */
export interface ConnectionStats {
  /** Connections open now (this request's included). */
  open: number;
  /** The most open at once (`--max-connections`). */
  limit: number;
  /** Connections refused since the server started, for being over `limit`. */
  refused: number;
}

/**
 * Caps the connections `server` holds open at once at `limit` (Node's `maxConnections`): one
 * more is closed as soon as it is accepted, before anything is read from it or written to it (over
 * TLS too: no handshake), so that it costs no memory and holds no descriptor; the client sees the
 * connection closed (or reset) and may retry. Refused connections are counted (`stats`). `log`
 * gets one line when refusing begins and one when a connection is accepted again, never one per
 * refused connection (a flood of them must not flood the log).
 *
 * Connections that are open but idle or slow are no concern of this class: the server's
 * timeouts close them (server-timeouts.ts), which makes room again.
 */
export class ConnectionLimit {
  private open = 0;
  private refused = 0;
  /** Refused since the last accepted connection: non-zero while refusing. */
  private refusedInRow = 0;

  constructor(
    server: Server,
    private readonly limit: number,
    private readonly log?: (line: string) => void,
  ) {
    server.maxConnections = limit;
    server.on('drop', () => {
      this.refused++;
      if (this.refusedInRow++ === 0) this.log?.(`connection refused: ${limit} connections are open, the most this server holds (--max-connections)`);
    });
    server.on('connection', (socket: Socket) => {
      this.open++;
      socket.once('close', () => this.open--);
      if (this.refusedInRow > 0) this.log?.(`accepting connections again (${this.refusedInRow} refused meanwhile)`);
      this.refusedInRow = 0;
    });
  }

  stats(): ConnectionStats {
    return { open: this.open, limit: this.limit, refused: this.refused };
  }
}
