import { connect } from 'node:net';
import { join } from 'node:path';
import { BackupManager, CairnError, MemoryBackupService, MemoryCatalog, MemoryVolumeDriver } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiContext } from '../src/api/api-context.js';
import { JobTable } from '../src/api/jobs.js';
import { ApiServer } from '../src/api/server.js';
import { cairnJson, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

/** Writes `raw` on a new connection to `url` and returns all the server sent until it closed the connection. */
function rawRequest(url: string, raw: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = connect(Number(port), hostname, () => socket.write(raw));
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (answer += d));
    socket.on('close', () => resolve(answer));
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? resolve(answer) : reject(err)));
  });
}

/** The status and JSON body of a raw HTTP answer. */
function parseAnswer(answer: string): { status: number; json: any } {
  const [head, body] = answer.split('\r\n\r\n');
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head!)?.[1]), json: JSON.parse(body!) };
}

describe('cairn serve: bad input gets a clear error with a stable code', () => {
  let cwd: string;
  let server: ServedApi;
  let volumeId: string;
  const longName = 'v'.repeat(150);

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'src.raw'), 1 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd })).volume.id;
    // Two volumes share the name `twin`; one of them has a backup.
    const twin = (await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'twin'], { cwd })).volume.id;
    await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'twin'], { cwd });
    await cairnJson(['backup', 'create', twin], { cwd });
    await cairnJson(['volume', 'create', longName, '--size', '1MiB'], { cwd });
    server = await serveApi(cwd);
  });
  afterAll(async () => {
    if (server) {
      server.child.kill('SIGTERM');
      await server.exit;
    }
    await removeDir(cwd);
  });

  it('a path segment longer than 100 characters reaches the route: a volume with a 150-character name is shown, a 150-character backup or job id is 404 NOT_FOUND', async () => {
    expect(await server.call('GET', `/v1/volumes/${longName}`)).toMatchObject({ status: 200, json: { name: longName } });
    const longId = 'b'.repeat(150);
    expect(await server.call('GET', `/v1/backups/${longId}`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('POST', `/v1/backups/${longId}/restore`, { newVolume: {} })).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('GET', `/v1/jobs/${longId}`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('GET', `/v1/targets/${'t'.repeat(150)}/stats`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('GET', `/v1/backups/${'c'.repeat(5000)}`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('a body of the wrong shape names the offending field, also on endpoints whose body is optional', async () => {
    const fractional = await server.call('POST', '/v1/targets/posix/gc', { graceSeconds: 1.5 });
    expect(fractional).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(fractional.json.error.details.issues).toEqual([{ path: 'body.graceSeconds', message: expect.stringMatching(/int/) }]);
    const text = await server.call('POST', '/v1/targets/posix/gc', { graceSeconds: '10', dryRun: 'yes' });
    expect(text.json.error.details.issues.map((i: { path: string }) => i.path)).toEqual(['body.graceSeconds', 'body.dryRun']);
    for (const repackThreshold of [1.5, -0.1, 'sometimes', '0.5', null]) {
      const bad = await server.call('POST', '/v1/targets/posix/gc', { dryRun: true, repackThreshold });
      expect(bad, String(repackThreshold)).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
      expect(bad.json.error.details.issues.map((i: { path: string }) => i.path)).toEqual(['body.repackThreshold']);
    }
    const array = await server.call('POST', '/v1/verify', []);
    expect(array).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(array.json.error.details.issues).toEqual([{ path: 'body', message: expect.stringMatching(/expected object, received array/) }]);
    expect((await server.call('GET', '/v1/jobs')).json).toEqual([]);
  });

  it('GET /v1/backups?volumeId= with a name several volumes share is 409 CONFLICT, not an empty list', async () => {
    expect(await server.call('GET', '/v1/backups?volumeId=twin')).toMatchObject({ status: 409, json: { error: { code: 'CONFLICT' } } });
    // An unknown value is still taken as the id of a volume that may be gone.
    expect(await server.call('GET', '/v1/backups?volumeId=gone')).toMatchObject({ status: 200, json: [] });
  });

  it('?wait= takes a plain decimal number of seconds: empty, hexadecimal or exponent notation is 400 INVALID_INPUT', async () => {
    expect(await server.call('GET', '/v1/jobs/no-such-job?wait=1.5')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    for (const wait of ['', '%20', '0x10', '1e1', '-0', '+5', 'Infinity']) {
      const r = await server.call('GET', `/v1/jobs/no-such-job?wait=${wait}`);
      expect(r, wait).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT', details: { issues: [{ path: 'query.wait' }] } } } });
    }
  });

  it('requests Node refuses before routing get the API error shape: headers too large is 431 HEADERS_TOO_LARGE, a request that is not HTTP 400 INVALID_INPUT', async () => {
    const big = await rawRequest(server.url, `GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(parseAnswer(big)).toEqual({ status: 431, json: { error: { code: 'HEADERS_TOO_LARGE', message: expect.any(String) } } });
    const garbage = await rawRequest(server.url, 'GET /v1/health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n');
    expect(parseAnswer(garbage)).toEqual({ status: 400, json: { error: { code: 'INVALID_INPUT', message: 'the request is not valid HTTP' } } });
    expect(await server.call('GET', '/v1/health')).toMatchObject({ status: 200 });
  });

  it('a #fragment in the request target is no part of the query: it is dropped before routing, while an encoded %23 stays in the path', async () => {
    // fetch never sends a fragment: the request line is written by hand.
    const get = async (target: string) => parseAnswer(await rawRequest(server.url, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
    const list = await get('/v1/volumes#frag');
    expect(list.status, JSON.stringify(list.json)).toBe(200);
    expect(list.json.map((v: { id: string }) => v.id)).toContain(volumeId);
    // The fragment does not end up in the last query value either.
    const backups = await get('/v1/backups?volumeId=src#frag');
    expect(backups.status, JSON.stringify(backups.json)).toBe(200);
    expect(backups.json).toEqual([]);
    expect(await get(`/v1/volumes/${volumeId}?#`)).toMatchObject({ status: 200, json: { id: volumeId } });
    // `%23` is a `#` inside the segment, not a fragment: no volume is named `src#x`.
    expect(await get('/v1/volumes/src%23x')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('readRate is a whole number of bytes per second: a fractional rate is 400 INVALID_INPUT and starts nothing', async () => {
    const r = await server.call('POST', '/v1/backups', { volumeId, readRate: 0.5 });
    expect(r).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT', details: { issues: [{ path: 'body.readRate' }] } } } });
    expect((await server.call('GET', '/v1/jobs')).json).toEqual([]);
  });
  // Last: it leaves jobs behind, which other cases count.
  it('POST /v1/targets/:name/gc takes repackThreshold as a share or "never", as repo gc --repack-threshold', async () => {
    for (const repackThreshold of [0, 0.5, 1, 'never']) {
      const started = await server.call('POST', '/v1/targets/posix/gc', { dryRun: true, graceSeconds: 0, repackThreshold });
      expect(started.status, String(repackThreshold)).toBe(202);
      let job = started.json;
      while (job.state === 'queued' || job.state === 'running') job = (await server.call('GET', `/v1/jobs/${job.id}?wait=10`)).json;
      expect(job, String(repackThreshold)).toMatchObject({ kind: 'gc', state: 'succeeded', result: { packsRepacked: 0 } });
    }
  });

});

describe('GET /v1/volumes while volumes come and go', () => {
  // Core's one listing (BackupManager.listVolumes) judges the volumes the driver listed from one
  // read of the catalog: a volume deleted right after the driver listed it is shown as listed,
  // never a 404 (or a 500) for the whole list.
  it('shows a volume deleted right after the driver listed it as listed, instead of answering 404', async () => {
    const volumes = new MemoryVolumeDriver();
    const kept = await volumes.createVolume({ size: MiB, name: 'kept' });
    const gone = await volumes.createVolume({ size: MiB, name: 'gone' });
    const list = volumes.listVolumes.bind(volumes);
    volumes.listVolumes = async () => {
      const listed = await list();
      await volumes.deleteVolume(gone.id); // deleted once listed, before the catalog is read
      return listed;
    };
    const manager = new BackupManager({ volumes, targets: { memory: new MemoryBackupService() }, catalog: new MemoryCatalog() });
    const api = { cli: { volumes: async () => volumes }, manager, jobs: new JobTable(), version: 'test' } as unknown as ApiContext;
    const server = new ApiServer(api);
    try {
      const r = await server.app.inject({ method: 'GET', url: '/v1/volumes' });
      expect(r.statusCode).toBe(200);
      expect(r.json().map((v: { id: string }) => v.id).sort()).toEqual([kept.id, gone.id].sort());
      expect((await list()).map((v) => v.id)).toEqual([kept.id]); // it was deleted indeed
    } finally {
      await server.app.close();
    }
  });
});
