import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

/**
 * A request Node's HTTP parser refuses, pipelined on a keep-alive connection behind a valid one
 * whose answer is still owed (a long-poll), does not answer in its place: the valid request gets
 * its own answer, then the connection is closed. Alone on its connection, the bad request still
 * gets its 400.
 */

/** Writes `raw` on a new connection to `url` and resolves with everything read until the server closes it. */
function exchange(url: string, raw: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(raw));
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => resolve(text));
  });
}

describe('cairn serve: a bad request pipelined behind a pending one', () => {
  let cwd: string;
  let server: ServedApi | undefined;

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'a.raw'), 4 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    server = await serveApi(cwd);
  }, 120_000);
  afterAll(async () => {
    const r = await server?.stop();
    expect(r?.code ?? 0, r?.stderr).toBe(0);
    await removeDir(cwd);
  });

  it('the long-poll before it gets its 200 (the job view), no 400 follows, and the connection closes', async () => {
    // A backup read at 1 byte a second runs until cancelled: the long-poll waits its full second.
    const job = await server!.call('POST', '/v1/backups', { volumeId: 'a', readRate: 1 });
    expect(job.status).toBe(202);
    const text = await exchange(server!.url, `GET /v1/jobs/${job.json.id}?wait=1 HTTP/1.1\r\nHost: localhost\r\n\r\nBOGUS REQUEST\x01\r\n\r\n`);
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));
    expect(body).toMatchObject({ id: job.json.id, state: 'running' });
    await server!.call('DELETE', `/v1/jobs/${job.json.id}`);
  }, 60_000);

  it('two valid requests before it are both answered, in order', async () => {
    const get = 'GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n';
    const text = await exchange(server!.url, `${get}${get}BOGUS REQUEST\x01\r\n\r\n`);
    expect(text.match(/HTTP\/1\.1 \d+/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200']);
  }, 60_000);

  it('alone on its connection, it gets the 400 INVALID_INPUT and the connection closes', async () => {
    const text = await exchange(server!.url, 'BOGUS REQUEST\x01\r\n\r\n');
    expect(text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'INVALID_INPUT' } });
  }, 60_000);
});
