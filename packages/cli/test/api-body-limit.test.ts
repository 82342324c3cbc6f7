import { request as httpRequest } from 'node:http';
import { describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { JobTable } from '../src/api/jobs.js';
import { BODY_LIMIT, ApiServer } from '../src/api/server.js';

/**
 * POSTs a chunked body (no Content-Length, so the size is known only as it arrives) of 64 KiB
 * chunks until the server answers or `total` bytes were sent; resolves with the answer and the bytes sent.
 */
function postChunked(url: string, total: number): Promise<{ status: number; json: any; sent: number }> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = httpRequest(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => (req.destroy(), resolve({ status: res.statusCode!, json: JSON.parse(text), sent })));
    });
    req.on('error', (err) => answered || reject(err));
    const chunk = Buffer.alloc(64 * 1024, 0x20); // JSON whitespace
    const more = () => {
      while (!answered && sent < total) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', more);
      }
      if (!answered) req.end();
    };
    req.write('{"volumeId":"v"');
    more();
  });
}

describe('cairn serve: request body limit', () => {
  it('a chunked body over 1 MiB is 413 PAYLOAD_TOO_LARGE before the whole of it is read, and nothing is started', async () => {
    const jobs = new JobTable();
    // A manager that records any call: the handler must never run.
    const calls: string[] = [];
    const manager = new Proxy({}, { get: (_t, name) => (calls.push(String(name)), () => Promise.reject(new Error('called'))) });
    const server = new ApiServer({ cli: {}, manager, jobs, version: 'test' } as unknown as ApiContext);
    try {
      const { url } = await server.listen({ host: '127.0.0.1', port: 0 });
      const answer = await postChunked(`${url}/v1/backups`, 64 * 1024 * 1024);
      expect(answer).toMatchObject({ status: 413, json: { error: { code: 'PAYLOAD_TOO_LARGE' } } });
      expect(answer.sent).toBeLessThan(64 * 1024 * 1024);
      expect(answer.sent).toBeGreaterThan(BODY_LIMIT);
      expect(calls).toEqual([]);
      expect(jobs.list()).toEqual([]);
    } finally {
      await server.shutdown();
    }
  });
});
