import { request } from 'node:http';
import { describe, expect, it } from 'vitest';
import { servedDeployment } from './served-deployment.js';

/**
 * Sends `method path` with `headers` and `body` over node:http (which, unlike fetch, sends any
 * method, TRACE included) and resolves with the status, the Allow header and the parsed body.
 */
function send(url: string, method: string, path: string, headers: Record<string, string> = {}, body?: string | Buffer): Promise<{ status: number; allow?: string; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, allow: res.headers.allow, json: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('cairn serve: a known path with a method it does not serve', () => {
  const d = servedDeployment();

  it('is 405 METHOD_NOT_ALLOWED with Allow for every method Node reads, not only the common ones: TRACE, QUERY, WebDAV methods', async () => {
    for (const method of ['TRACE', 'PROPFIND', 'SEARCH', 'LOCK', 'PURGE', 'REPORT']) {
      const r = await send(d.server.url, method, '/v1/health');
      expect(r.status, method).toBe(405);
      expect(r.allow, method).toBe('GET, HEAD');
      expect(r.json.error.code, method).toBe('METHOD_NOT_ALLOWED');
    }
    // QUERY (RFC 10008) without a Content-Type, and with one.
    for (const headers of [{}, { 'content-type': 'application/json' }] as Array<Record<string, string>>) {
      const r = await send(d.server.url, 'QUERY', '/v1/backups/x', headers, headers['content-type'] ? '{}' : undefined);
      expect(r.status, JSON.stringify(headers)).toBe(405);
      expect(r.allow).toBe('GET, HEAD, DELETE');
      expect(r.json.error.code).toBe('METHOD_NOT_ALLOWED');
    }
    // An unknown path stays 404, whatever the method.
    const unknown = await send(d.server.url, 'TRACE', '/v1/nothing-here');
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.code).toBe('NOT_FOUND');
  });

  it('is 405 whatever the body: another content type, malformed JSON or a body over the limit does not turn it into 415, 400 or 413', async () => {
    const cases: Array<[string, string, Record<string, string>, string | Buffer]> = [
      ['PUT', '/v1/health', { 'content-type': 'text/plain' }, 'x'],
      ['POST', '/v1/health', { 'content-type': 'application/json' }, '{not json'],
      ['PATCH', '/v1/backups/x', { 'content-type': 'application/json' }, '{"a":'],
      ['PUT', '/v1/jobs/x', { 'content-type': 'application/json' }, Buffer.alloc(2 * 1024 * 1024, 0x20)],
    ];
    for (const [method, path, headers, body] of cases) {
      const r = await send(d.server.url, method, path, headers, body);
      expect(r.status, `${method} ${path}`).toBe(405);
      expect(r.json.error.code).toBe('METHOD_NOT_ALLOWED');
      expect(r.allow).toBe(path === '/v1/health' ? 'GET, HEAD' : 'GET, HEAD, DELETE');
    }
    // The methods the path serves keep their body rules.
    expect((await send(d.server.url, 'DELETE', '/v1/jobs/x', { 'content-type': 'text/plain' }, 'x')).status).toBe(415);
  });
});
