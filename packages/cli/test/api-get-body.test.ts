import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { JobTable } from '../src/api/jobs.js';
import { ApiServer } from '../src/api/server.js';

/** Writes `raw` on a new connection and resolves with the first answer's status and JSON body. */
function rawRequest(url: string, raw: string): Promise<{ status: number; json: any }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = connect(Number(port), hostname, () => socket.write(raw));
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      answer += d;
      const [head, body] = answer.split('\r\n\r\n');
      const length = Number(/content-length: (\d+)/i.exec(head ?? '')?.[1]);
      if (body !== undefined && Buffer.byteLength(body) >= length) {
        socket.destroy();
        resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head!)?.[1]), json: JSON.parse(body) });
      }
    });
    socket.on('error', reject);
  });
}

/**
 * GET requests carry no content (RFC 9110 §9.3.1: content in a GET has no defined meaning). The
 * API validates every request strictly, so content on a GET is refused with 400 INVALID_INPUT,
 * whatever it holds, instead of being ignored; endpoints that take no body on other methods
 * accept none or `{}` as before.
 */
describe('a body on a GET endpoint', () => {
  let server: ApiServer;
  let url: string;

  beforeAll(async () => {
    const api = { cli: {}, manager: {}, jobs: new JobTable(), version: 'test' } as unknown as ApiContext;
    server = new ApiServer(api);
    url = (await server.listen({ host: '127.0.0.1', port: 0 })).url;
  });
  afterAll(async () => {
    await server?.shutdown();
  });

  const get = (headers: Record<string, string>, payload?: string) => server.app.inject({ method: 'GET', url: '/v1/health', headers, ...(payload === undefined ? {} : { payload }) });

  it('GET /v1/health with a JSON body is 400 INVALID_INPUT, also with `{}` and with another content type', async () => {
    for (const [type, payload] of [
      ['application/json', '{"a":1}'],
      ['application/json', '{}'],
      ['text/plain', 'hello'],
    ] as const) {
      const r = await get({ 'content-type': type }, payload);
      expect(r.statusCode, `${type} ${payload}`).toBe(400);
      expect(r.json()).toMatchObject({ error: { code: 'INVALID_INPUT', message: expect.stringMatching(/GET .*no body/), details: { issues: [{ path: 'body' }] } } });
    }
  });

  it('GET without a body, or with an empty one, is answered as before', async () => {
    expect((await get({})).statusCode).toBe(200);
    expect((await get({ 'content-type': 'application/json', 'content-length': '0' })).json()).toMatchObject({ status: 'ok' });
  });

  it('a chunked body on a GET, over a real connection, is refused too', async () => {
    const r = await rawRequest(url, 'GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"a":1}\r\n0\r\n\r\n');
    expect(r).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
  });

  it('the other methods keep their rules: a body-less DELETE takes none or `{}`, and refuses a field', async () => {
    const job = async (payload: string) => server.app.inject({ method: 'DELETE', url: '/v1/jobs/nope', headers: { 'content-type': 'application/json' }, payload });
    expect((await job('{}')).json()).toMatchObject({ error: { code: 'NOT_FOUND' } }); // accepted, then the job is unknown
    expect((await job('{"a":1}')).json()).toMatchObject({ error: { code: 'INVALID_INPUT', details: { issues: [{ path: 'body' }] } } });
  });
});
