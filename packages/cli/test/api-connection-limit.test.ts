import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { JobTable } from '../src/api/jobs.js';
import { ApiServer, type ApiServerOptions } from '../src/api/server.js';

/** A connection to `port` and everything the server sent on it, complete once it closed. */
interface Conn {
  socket: Socket;
  /** Bytes the server sent so far (latin1). */
  text(): string;
  /** Resolves once the server has sent a whole answer (headers and Content-Length bytes). */
  answered(): Promise<{ status: number; json: any }>;
  /** Resolves true once the connection is closed, false if it is still open after `ms` (a bound, not a measure). */
  closedWithin(ms: number): Promise<boolean>;
}

const opened: Socket[] = [];
const servers: ApiServer[] = [];

async function open(port: number): Promise<Conn> {
  const socket = connect(port, '127.0.0.1');
  opened.push(socket);
  socket.on('error', () => {}); // a refused connection may be reset
  let text = '';
  let closed = false;
  const wake = new Set<() => void>();
  const poke = () => [...wake].forEach((w) => w());
  socket.on('data', (d: Buffer) => ((text += d.toString('latin1')), poke()));
  socket.on('close', () => ((closed = true), poke()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  const whole = () => {
    const at = text.indexOf('\r\n\r\n');
    if (at < 0) return undefined;
    const head = text.slice(0, at);
    const body = text.slice(at + 4);
    if (Buffer.byteLength(body, 'latin1') < Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1])) return undefined;
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), json: JSON.parse(body) };
  };
  const until = <T>(check: () => T | undefined) =>
    new Promise<T>((resolve, reject) => {
      const w = () => {
        const v = check();
        if (v !== undefined) return wake.delete(w), resolve(v);
        if (closed) return wake.delete(w), reject(new Error(`closed without a whole answer: ${JSON.stringify(text)}`));
      };
      wake.add(w);
      w();
    });
  return {
    socket,
    text: () => text,
    answered: () => until(whole),
    closedWithin: (ms) =>
      new Promise((resolve) => {
        if (closed) return resolve(true);
        const timer = setTimeout(() => (wake.delete(w), resolve(false)), ms);
        const w = () => closed && (clearTimeout(timer), wake.delete(w), resolve(true));
        wake.add(w);
      }),
  };
}

const health = 'GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';

async function start(options: ApiServerOptions): Promise<number> {
  const api = { cli: {}, manager: {}, jobs: new JobTable(), version: 'test' } as unknown as ApiContext;
  const server = new ApiServer(api, options);
  servers.push(server);
  return (await server.listen({ host: '127.0.0.1', port: 0 })).port;
}

afterEach(async () => {
  for (const s of opened.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.shutdown();
});

describe('cairn serve: connection limit', () => {
  it('connections over --max-connections are closed unanswered and counted; once one closes, a request is answered again', async () => {
    const log: string[] = [];
    const port = await start({ maxConnections: 3, timeouts: { keepAliveTimeoutMs: 600_000 }, log: (l) => log.push(l) });
    // Three keep-alive connections, each answered once and held open.
    const held: Conn[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await open(port);
      c.socket.write(health);
      expect((await c.answered()).status).toBe(200);
      held.push(c);
    }
    // Two idle ones and one with a request: each closed by the server, nothing written on it.
    const extra = [await open(port), await open(port), await open(port)];
    extra[2]!.socket.write(health);
    for (const c of extra) {
      expect(await c.closedWithin(5_000), 'a connection over the limit is still open').toBe(true);
      expect(c.text()).toBe('');
    }
    expect(log.filter((l) => l.startsWith('connection refused'))).toHaveLength(1); // not one line per connection

    // One held connection closes: a new one is served (once the server has seen the close).
    held[0]!.socket.destroy();
    let refused = extra.length;
    for (;;) {
      const c = await open(port);
      c.socket.write(health);
      const answer = await c.answered().catch(() => undefined);
      if (answer) {
        expect(answer.status).toBe(200);
        expect(answer.json.connections).toEqual({ open: 3, limit: 3, refused });
        break;
      }
      expect(c.text()).toBe('');
      refused++;
      expect(refused, 'no connection is accepted although one was closed').toBeLessThan(100);
    }
    expect(log).toContain(`accepting connections again (${refused} refused meanwhile)`);
    // The held connections still work.
    held[1]!.socket.write(health);
    expect((await held[1]!.answered()).status).toBe(200);
  });

  it('the default limit is reported by GET /v1/health', async () => {
    const port = await start({});
    const c = await open(port);
    c.socket.write(health);
    expect((await c.answered()).json.connections).toEqual({ open: 1, limit: 256, refused: 0 });
  });
});

describe('cairn serve: slow clients are cut by the request timeout', () => {
  it('headers sent a byte at a time, and a connection that sends nothing, are answered 408 REQUEST_TIMEOUT and closed before they are complete', async () => {
    const port = await start({ timeouts: { requestTimeoutMs: 400 } });
    const silent = await open(port);
    const slow = await open(port);
    const headers = `GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'a'.repeat(400)}\r\n\r\n`;
    let sent = 0;
    while (sent < headers.length && !(await slow.closedWithin(0))) {
      slow.socket.write(headers[sent++]!);
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(sent, 'the slow headers were all read').toBeLessThan(headers.length);
    for (const c of [slow, silent]) {
      expect(await c.closedWithin(5_000)).toBe(true);
      expect(c.text()).toMatch(/^HTTP\/1\.1 408 /);
      expect(JSON.parse(c.text().split('\r\n\r\n')[1]!)).toMatchObject({ error: { code: 'REQUEST_TIMEOUT' } });
    }
  });
});
