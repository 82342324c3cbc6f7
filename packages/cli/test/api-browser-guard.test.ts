import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { JobTable } from '../src/api/jobs.js';
import { ApiServer } from '../src/api/server.js';

/** Writes one HTTP/1.1 request on a new connection; resolves with the status and JSON body of the answer. */
function rawRequest(port: number, method: string, path: string, headers: string[]): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = connect(port, '127.0.0.1', () => socket.write(`${method} ${path} HTTP/1.1\r\n${headers.map((h) => `${h}\r\n`).join('')}Content-Length: 0\r\nConnection: close\r\n\r\n`));
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (answer += d));
    socket.on('end', () => {
      const [head = '', body = ''] = answer.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), json: body ? JSON.parse(body) : undefined });
    });
    socket.on('error', reject);
  });
}

/**
 * Without --token-file the API trusts whoever reaches the loopback address. A web page the user
 * opens can reach it too: by DNS rebinding (its own host name resolving to 127.0.0.1, so the
 * browser sends `Host: evil.example:8470` and lets the page read the answers) or by a cross-site
 * request (`Origin: https://evil.example`, no preflight for a POST without a body). Such requests
 * must be refused before any route runs.
 */
describe('cairn serve without a token: requests a web page can make are refused', () => {
  let server: ApiServer;
  let port: number;
  let verifies = 0;

  beforeAll(async () => {
    const jobs = new JobTable();
    // A route with an effect: POST /v1/verify starts a job. Counted, so the test sees whether it ran.
    const start = jobs.start.bind(jobs);
    jobs.start = ((...args: Parameters<JobTable['start']>) => {
      verifies++;
      return start(...args);
    }) as JobTable['start'];
    const api = { cli: {}, manager: {}, jobs, version: 'test' } as unknown as ApiContext;
    server = new ApiServer(api);
    port = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
  });
  afterAll(() => server?.shutdown());

  it('answers local clients (loopback Host, no Origin) as before', async () => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, 'LOCALHOST']) {
      const r = await rawRequest(port, 'GET', '/v1/health', [`Host: ${host}`]);
      expect(r.status, host).toBe(200);
      expect(r.json.status).toBe('ok');
    }
  });

  it('answers a loopback Host written as a fully qualified name (trailing dot: curl http://localhost.:port/)', async () => {
    for (const host of [`localhost.:${port}`, 'localhost.', `127.0.0.1.:${port}`]) {
      const r = await rawRequest(port, 'GET', '/v1/health', [`Host: ${host}`]);
      expect(r.status, host).toBe(200);
    }
    // Still a name of someone else's with the dot.
    expect((await rawRequest(port, 'GET', '/v1/health', [`Host: evil.example.:${port}`])).status).toBe(401);
  });

  it('refuses a Host that is not a loopback name or address (DNS rebinding), before any route runs', async () => {
    for (const host of [`evil.example:${port}`, 'evil.example', `127.0.0.1.evil.example:${port}`, `localhost.evil.example`]) {
      const r = await rawRequest(port, 'GET', '/v1/health', [`Host: ${host}`]);
      expect(r.status, host).toBe(401);
      expect(r.json.error.code).toBe('UNAUTHENTICATED');
    }
    const before = verifies;
    const r = await rawRequest(port, 'POST', '/v1/verify', [`Host: evil.example:${port}`]);
    expect(r.status).toBe(401);
    expect(verifies).toBe(before);
  });

  it('refuses a cross-site request (Origin, Sec-Fetch-Site) even with a loopback Host, before any route runs', async () => {
    const before = verifies;
    for (const headers of [
      [`Host: 127.0.0.1:${port}`, 'Origin: https://evil.example'],
      [`Host: 127.0.0.1:${port}`, 'Origin: null'],
      [`Host: localhost:${port}`, 'Sec-Fetch-Site: cross-site'],
    ]) {
      const r = await rawRequest(port, 'POST', '/v1/verify', headers);
      expect(r.status, headers.join(' | ')).toBe(401);
      expect(r.json.error.code).toBe('UNAUTHENTICATED');
    }
    expect(verifies).toBe(before);
  });
});
