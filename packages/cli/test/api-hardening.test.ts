import { writeFile, chmod } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CairnError, type DriverRegistry, type Job } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { loadToken } from '../src/api/auth.js';
import { JobTable, type JobSpec } from '../src/api/jobs.js';
import { ApiServer } from '../src/api/server.js';
import { removeDir, tempDir } from './helpers.js';

/** Writes `raw` on a new connection and resolves with the status line and JSON body of the answer. */
function rawRequest(port: number, raw: string | Buffer): Promise<{ status: number; head: string; json: any }> {
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = connect(port, '127.0.0.1', () => socket.write(raw));
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      answer += d;
      const [head = '', body] = answer.split('\r\n\r\n');
      const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
      if (body !== undefined && Buffer.byteLength(body, 'latin1') >= length) {
        socket.destroy();
        resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), head, json: JSON.parse(body) });
      }
    });
    socket.on('error', reject);
  });
}

const token = 'a'.repeat(8) + '0123456789abcdef';

describe('cairn serve: authentication', () => {
  let server: ApiServer;
  let port: number;

  beforeAll(async () => {
    const api = { cli: {}, manager: {}, jobs: new JobTable(), version: 'test' } as unknown as ApiContext;
    server = new ApiServer(api, { token });
    port = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
  });
  afterAll(() => server?.shutdown());

  const get = (path: string, headers: string[]) => rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`);

  it('a request with several Authorization headers is 401 UNAUTHENTICATED, even when the first holds the right token', async () => {
    expect((await get('/v1/health', [`Authorization: Bearer ${token}`])).status).toBe(200);
    for (const headers of [
      [`Authorization: Bearer ${token}`, 'Authorization: Bearer wrong-token-wrong-token'],
      ['Authorization: Bearer wrong-token-wrong-token', `Authorization: Bearer ${token}`],
      [`Authorization: Bearer ${token}`, `Authorization: Bearer ${token}`],
    ]) {
      const r = await get('/v1/health', headers);
      expect(r.status, headers.join(' | ')).toBe(401);
      expect(r.json.error.code).toBe('UNAUTHENTICATED');
      expect(r.head).toMatch(/www-authenticate: Bearer realm="cairn", error="invalid_token"/i);
    }
  });

  it('a malformed URL without the token is 401 UNAUTHENTICATED like every request; with it, 400 INVALID_INPUT', async () => {
    const bare = await get('/v1/jobs/%zz', []);
    expect(bare.status).toBe(401);
    expect(bare.json.error.code).toBe('UNAUTHENTICATED');
    expect(bare.head).toMatch(/www-authenticate: Bearer realm="cairn"/i);
    expect((await get('/v1/jobs/%zz', ['Authorization: Bearer wrong-token-wrong-token'])).status).toBe(401);
    const authed = await get('/v1/jobs/%zz', [`Authorization: Bearer ${token}`]);
    expect(authed.status).toBe(400);
    expect(authed.json.error.code).toBe('INVALID_INPUT');
  });
});

describe('cairn serve: token files', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));

  /** A registry whose secret reader reads the file as core's does (UTF-8, one trailing newline dropped). */
  const registry = { secret: async (ref: string) => (await import('node:fs/promises')).readFile(ref.slice(5), 'utf8').then((t) => t.replace(/\n$/, '')) } as unknown as DriverRegistry;

  it('a token with characters no request can carry as sent (non-ASCII, control characters) is refused at start with INVALID_INPUT', async () => {
    for (const [name, text] of [
      ['euro', 'abcdefghijklmnop\u20ac'],
      ['accent', 'abcdefghijklmnop\u00e9'],
      ['control', 'abcdefghijklmnop\u0001'],
      ['delete', 'abcdefghijklmnop\u007f'],
    ] as const) {
      const file = join(cwd, name);
      await writeFile(file, `${text}\n`);
      await chmod(file, 0o600);
      await expect(loadToken(registry, file), name).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    const good = join(cwd, 'good');
    await writeFile(good, 'Zm9vYmFyYmF6cXV4cXV1eA==-._~+/\n', { mode: 0o600 });
    expect((await loadToken(registry, good)).token).toBe('Zm9vYmFyYmF6cXV4cXV1eA==-._~+/');
  });

  it('why: a server holding a non-ASCII token refuses the client that sends it (UTF-8 bytes, as curl sends the file)', async () => {
    const euro = 'abcdefghijklmnop\u20ac';
    const api = { cli: {}, manager: {}, jobs: new JobTable(), version: 'test' } as unknown as ApiContext;
    const server = new ApiServer(api, { token: euro });
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    try {
      const r = await rawRequest(port, Buffer.from(`GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${euro}\r\nConnection: close\r\n\r\n`, 'utf8'));
      expect(r.status).toBe(401);
    } finally {
      await server.shutdown();
    }
  });
});

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

describe('cairn serve: long-polling a long job', () => {
  it('GET /v1/jobs/:id?wait= polled many times on a running job keeps no memory per returned poll', async () => {
    const table = new JobTable();
    let end!: () => void;
    const spec: JobSpec = { id: 'long', kind: 'backup', progress: () => ({ bytesDone: 0, bytesTotal: 0 }), cancel: () => {}, outcome: new Promise((r) => (end = () => r({ result: 1 }))) };
    table.add(spec);
    // Warm up (JIT, timers), then measure what 100 000 polls that timed out leave behind.
    for (let i = 0; i < 2; i++) await Promise.all(Array.from({ length: 10_000 }, () => table.wait('long', 1)));
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let round = 0; round < 10; round++) await Promise.all(Array.from({ length: 10_000 }, () => table.wait('long', 1)));
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    expect(grown, `${(grown / 1e6).toFixed(1)} MB kept by 100 000 returned polls`).toBeLessThan(4e6);
    // Waits still in progress are woken by the job's end, with the ended view.
    const waiting = table.wait('long', 60_000);
    end();
    expect(await waiting).toMatchObject({ state: 'succeeded', result: 1 });
  }, 60_000);
});

describe('cairn serve: shutdown while a job is being started', () => {
  it('shutdown resolves only once a start still in flight after the drain timeout has added its job, cancelled it and seen it settle; the start is told to stop', async () => {
    const jobs = new JobTable();
    let started = false;
    let startSignal: AbortSignal | undefined;
    const manager = {
      // A start that takes longer than the drain timeout (a wait on the backup's catalog section, say).
      startBackup: async (request: { signal?: AbortSignal }) => {
        started = true;
        startSignal = request.signal;
        await new Promise((r) => setTimeout(r, 800));
        let fail!: (e: unknown) => void;
        const job: Job = {
          id: 'b1', kind: 'backup', backupId: 'b1', volumeId: 'v1',
          done: new Promise((_res, rej) => (fail = rej)),
          // Cleaning up takes a while, as the manager's does.
          cancel: (reason) => void setTimeout(() => fail(new CairnError('CANCELLED', reason ?? 'cancelled')), 300),
          progress: () => ({ bytesDone: 0, bytesTotal: 1 }),
        };
        return job;
      },
    };
    const cli = { defaultTargetName: 'posix', loaded: { config: { targets: { posix: {} } } }, resolveVolume: async () => ({ id: 'v1' }) };
    const server = new ApiServer({ cli, manager, jobs, version: 'test' } as unknown as ApiContext, { timeouts: { drainTimeoutMs: 100 } });
    const { url } = await server.listen({ host: '127.0.0.1', port: 0 });
    const post = fetch(`${url}/v1/backups`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ volumeId: 'v1' }) }).catch(() => undefined);
    while (!started) await new Promise((r) => setTimeout(r, 10));
    await server.shutdown();
    // The contract of shutdown: every job has ended. The one whose start was in flight included.
    expect(jobs.running).toBe(0);
    expect(jobs.list()).toEqual([expect.objectContaining({ id: 'b1', state: 'cancelled', cancelRequested: true })]);
    expect(startSignal?.aborted).toBe(true);
    await post;
  });
});
