import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { clientErrorResponse } from './errors.js';

/** The requests of one connection whose responses have not ended yet, oldest first. */
type Pending = Array<{ req: IncomingMessage; res: ServerResponse }>;

/**
 * Answers requests Node's HTTP parser refuses (the server's `clientError`) without corrupting
 * the answers still owed on the connection. Install once per server with `install`; pass
 * `handle` as the server's client-error handler.
 *
 * Contract of `handle(err, socket)`:
 * - a reset or destroyed socket gets nothing;
 * - no response pending on the connection, or only that of the request still being received
 *   (its body incomplete: the refused bytes are its own) with nothing of it sent yet: the error
 *   answer (clientErrorResponse) is written and the connection closed;
 * - the refused bytes are the body of a request behind other pending responses, or a response
 *   was started: the connection is closed with nothing written (as Node does);
 * - otherwise (a bad request pipelined behind valid ones): nothing is written for it; every
 *   pending response is sent in order, then the connection is closed. What follows the bad
 *   request on the connection cannot be parsed, so it is never answered.
 */
export class ClientErrors {
  private readonly pending = new WeakMap<Socket, Pending>();
  private readonly closing = new WeakSet<Socket>();

  /** Tracks every request's response on `server` (call before it serves requests). */
  install(server: Server): void {
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const socket = req.socket;
      const list = this.pending.get(socket) ?? [];
      this.pending.set(socket, list);
      const entry = { req, res };
      list.push(entry);
      res.once('close', () => {
        const i = list.indexOf(entry);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0 && this.closing.has(socket)) socket.destroySoon();
      });
    });
  }

  readonly handle = (err: Error, socket: Socket): void => {
    if ((err as NodeJS.ErrnoException).code === 'ECONNRESET' || socket.destroyed) return;
    if (this.closing.has(socket)) return; // already closing after its pending responses
    const list = this.pending.get(socket) ?? [];
    const last = list[list.length - 1];
    if (last && last.req.complete) {
      // A valid request's answer is still owed: it goes out first, then the connection closes.
      this.closing.add(socket);
      socket.pause();
      return;
    }
    const { status, body } = clientErrorResponse(err);
    const text = JSON.stringify(body);
    // Only when no other response is owed and nothing of this one was sent: else the bytes would corrupt them.
    const clean = list.length === 0 || (list.length === 1 && !last.res.headersSent);
    if (socket.writable && clean) {
      socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
    }
    socket.destroy(err);
  };
}
