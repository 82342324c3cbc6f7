import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeRawImage, type CliResult, jsonError } from './helpers.js';

/** The body of an error answer. */
type ApiError = { error: { code: string; message: string } };

/** A running `cairn serve` and a small fetch client for it. */
interface Server {
  url: string;
  child: ReturnType<typeof cairnSpawn>['child'];
  exit: Promise<CliResult>;
  /** Sends a request; `body` is sent as JSON unless it is a string (sent as is). */
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; headers: Headers; json: any }>;
}

/** The address line a started `cairn serve --json` prints first, parsed; rejects if it exits before. */
function addressLine(child: Server['child'], exit: Server['exit']): Promise<{ listening: string; port: number; auth: string }> {
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes('\n')) resolve(JSON.parse(text.slice(0, text.indexOf('\n'))));
    });
    void exit.then((r) => reject(new Error(`serve exited early with ${r.code}: ${r.stderr}`)));
  });
}

/** Writes `token` to `<cwd>/token`, readable by its owner only, as `--token-file` wants it. */
async function writeToken(cwd: string, token: string): Promise<void> {
  await writeFile(join(cwd, 'token'), `${token}\n`);
  await chmod(join(cwd, 'token'), 0o600);
}

/** Starts `cairn serve --listen 127.0.0.1:0 --json …` in `cwd` and waits for the address line. */
async function serve(cwd: string, args: string[] = [], token?: string): Promise<Server> {
  const { child, exit } = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json', ...args], { cwd });
  const { listening, port, auth } = await addressLine(child, exit);
  expect(port).toBeGreaterThan(0);
  expect(auth).toBe(token ? 'bearer' : 'none');
  const call: Server['call'] = async (method, path, body, headers = {}) => {
    const h: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers };
    let payload: string | undefined;
    if (body !== undefined) {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      h['content-type'] ??= 'application/json';
    }
    const res = await fetch(`${listening}${path}`, { method, headers: h, body: payload });
    const text = await res.text();
    return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
  };
  return { url: listening, child, exit, call };
}

/**
 * POSTs a body the server must refuse from its Content-Length alone (413): the headers and the
 * body's first 64 KiB are sent, then the answer is awaited and the rest never written. (Writing it
 * all, as fetch does, races the server closing the connection: EPIPE, depending on timing.)
 */
async function postOversized(url: string, path: string, body: string): Promise<{ status: number; json: { error: { code: string } } }> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        req.destroy();
        resolve({ status: res.statusCode!, json: JSON.parse(text) });
      });
      res.on('error', reject);
    });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    req.write(body.slice(0, 64 * 1024));
  });
}

/** Stops a server with SIGTERM and returns how it exited. */
async function stop(server: Server): Promise<CliResult> {
  server.child.kill('SIGTERM');
  return server.exit;
}

/** Polls a job until it has ended (long-polling with ?wait) and returns its view. */
async function settle(server: Server, jobId: string): Promise<any> {
  for (let i = 0; i < 30; i++) {
    const r = await server.call('GET', `/v1/jobs/${jobId}?wait=2`);
    expect(r.status).toBe(200);
    if (r.json.state !== 'running') return r.json;
  }
  throw new Error(`job ${jobId} did not end`);
}

/** A volume's bytes, read back through `cairn volume export` (another process, the real file driver). */
async function volumeBytes(cwd: string, volumeId: string): Promise<Buffer> {
  const file = join(cwd, `export-${volumeId}.raw`);
  await cairnJson(['volume', 'export', volumeId, file, '--force'], { cwd });
  return readFile(file);
}

describe('cairn serve: backups, restores and records over HTTP', () => {
  let cwd: string;
  let server: Server;
  let volumeId: string;
  let fullData: Buffer;
  let incData: Buffer;
  let full: any;
  let inc: any;

  beforeAll(async () => {
    cwd = await tempDir();
    fullData = await writeRawImage(join(cwd, 'src.raw'), 4 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd })).volume.id;
    server = await serve(cwd);
  });
  afterAll(async () => {
    if (server) await stop(server);
    await removeDir(cwd);
  });

  it('GET /v1/health, /v1/volumes, /v1/volumes/:id, /v1/targets and stats answer with the CLI views', async () => {
    expect(await server.call('GET', '/v1/health')).toMatchObject({ status: 200, json: { status: 'ok', version: '0.1.0', jobs: { running: 0 } } });
    const volumes = await server.call('GET', '/v1/volumes');
    expect(volumes.json).toEqual([expect.objectContaining({ id: volumeId, name: 'src', size: 4 * MiB, status: 'available' })]);
    expect((await server.call('GET', '/v1/volumes/src')).json).toMatchObject({ id: volumeId, snapshots: [] });
    expect((await server.call('GET', `/v1/volumes/${volumeId}`)).json).toMatchObject({ id: volumeId, name: 'src' });
    expect(await server.call('GET', '/v1/volumes/nope')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect((await server.call('GET', '/v1/targets')).json).toEqual([expect.objectContaining({ name: 'posix', plugin: 'posix', default: true, capabilities: expect.objectContaining({ incremental: true }) })]);
    expect((await server.call('GET', '/v1/targets/posix/stats')).json).toMatchObject({ encrypted: false, backups: 0 });
    expect(await server.call('GET', '/v1/targets/constructor/stats')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('an incremental with no full backup is refused synchronously: 400 INVALID_INPUT, no job, no record', async () => {
    const r = await server.call('POST', '/v1/backups', { volumeId, incremental: true });
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('INVALID_INPUT');
    expect(r.json.error.message).toMatch(/no available backup/);
    expect((await server.call('GET', '/v1/jobs')).json).toEqual([]);
    expect((await server.call('GET', '/v1/backups')).json).toEqual([]);
  });

  it('POST /v1/backups starts a full backup: 202, Location, a job that ends succeeded with the record', async () => {
    const r = await server.call('POST', '/v1/backups', { volumeId: 'src', name: 'monday', description: 'the full one' });
    expect(r.status).toBe(202);
    expect(r.json).toMatchObject({ kind: 'backup', state: 'running', volumeId, target: 'posix', cancelRequested: false, progress: { bytesTotal: 4 * MiB } });
    expect(r.headers.get('location')).toBe(`/v1/jobs/${r.json.id}`);
    const job = await settle(server, r.json.id);
    expect(job).toMatchObject({ state: 'succeeded', result: { id: job.backupId, name: 'monday', status: 'available', incremental: false, size: 4 * MiB } });
    // Progress counts the bytes the backup reads: the image's holes are not read.
    expect(job.progress.bytesDone).toBeGreaterThan(0);
    expect(job.progress.bytesDone).toBe(job.progress.bytesTotal);
    expect(job.endedAt).toBeDefined();
    expect(job.error).toBeUndefined();
    full = job.result;
    expect((await server.call('GET', `/v1/backups/${full.id}`)).json).toEqual(full);
  });

  it('an incremental reads only what changed and restores byte-exact to a new volume', async () => {
    incData = Buffer.from(fullData);
    randomBytes(65536).copy(incData, 3 * MiB + 4096);
    await writeFile(join(cwd, 'changed.raw'), incData);
    await cairnJson(['volume', 'import', join(cwd, 'changed.raw'), '--into', volumeId], { cwd });
    const started = await server.call('POST', '/v1/backups', { volumeId, incremental: true, name: 'tuesday' });
    expect(started.status).toBe(202);
    const job = await settle(server, started.json.id);
    expect(job.state).toBe('succeeded');
    inc = job.result;
    expect(inc).toMatchObject({ incremental: true, parentId: full.id, status: 'available' });
    expect(inc.stats.bytesRead).toBeLessThan(full.stats.bytesRead);
    expect((await server.call('GET', `/v1/backups?volumeId=src`)).json.map((b: any) => b.id)).toEqual([full.id, inc.id]);
    expect((await server.call('GET', `/v1/backups/${full.id}/children`)).json.map((b: any) => b.id)).toEqual([inc.id]);

    const restore = await server.call('POST', `/v1/backups/${inc.id}/restore`, { newVolume: { name: 'restored' } });
    expect(restore.status).toBe(202);
    expect(restore.json).toMatchObject({ kind: 'restore', backupId: inc.id });
    const done = await settle(server, restore.json.id);
    expect(done).toMatchObject({ state: 'succeeded', result: { backup: { id: inc.id, status: 'available' }, volume: { id: restore.json.volumeId, name: 'restored', status: 'available' } } });
    expect((await volumeBytes(cwd, restore.json.volumeId)).equals(incData)).toBe(true);

    // The full backup over that (existing) volume, by name: it holds the first image again.
    const over = await server.call('POST', `/v1/backups/${full.id}/restore`, { volumeId: 'restored' });
    expect(over.status).toBe(202);
    expect(over.json.volumeId).toBe(restore.json.volumeId);
    expect((await settle(server, over.json.id)).state).toBe('succeeded');
    expect((await volumeBytes(cwd, restore.json.volumeId)).equals(fullData)).toBe(true);
  });

  it('verify runs as a job: one backup, then the whole repository', async () => {
    const one = await server.call('POST', `/v1/backups/${inc.id}/verify`);
    expect(one.status).toBe(202);
    expect(await settle(server, one.json.id)).toMatchObject({ kind: 'verify', state: 'succeeded', backupId: inc.id, result: { checked: [inc.id], problems: [], bytesChecked: expect.any(Number) } });
    const all = await server.call('POST', '/v1/verify', {});
    const done = await settle(server, all.json.id);
    expect(done).toMatchObject({ kind: 'verify', state: 'succeeded', result: { problems: [] } });
    expect([...done.result.checked].sort()).toEqual([full.id, inc.id].sort());
    // The repository reported its progress while verifying: every distinct chunk, checked.
    expect(done.result.bytesChecked).toBeGreaterThan(0);
    expect(done.progress).toEqual({ bytesDone: done.result.bytesChecked, bytesTotal: done.result.bytesChecked });
  });

  it('errors: one JSON shape, one status per code', async () => {
    const unknown = await server.call('GET', '/v1/backups/no-such-backup');
    expect(unknown).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('GET', '/v1/backups/..%2F..%2Fconfig')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('POST', '/v1/backups/no-such-backup/restore', { newVolume: {} })).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('DELETE', '/v1/backups/no-such-backup')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });

    const malformed = await server.call('POST', '/v1/backups', '{"volumeId": "src",');
    expect(malformed).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT', message: expect.stringMatching(/^the request body is not valid JSON/) } } });
    expect(await server.call('POST', '/v1/backups', '{"__proto__": {"admin": true}, "volumeId": "src"}')).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('GET', '/v1/backups/%E0%A4%A')).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    const invalid = await server.call('POST', '/v1/backups', { volumeId: 'src', incremental: 'yes', color: 'blue' });
    expect(invalid.status).toBe(400);
    expect(invalid.json.error.code).toBe('INVALID_INPUT');
    expect(invalid.json.error.details.issues).toEqual([
      { path: 'body.incremental', message: expect.stringContaining('boolean') },
      { path: 'body', message: expect.stringContaining('color') },
    ]);
    expect(await server.call('POST', '/v1/backups')).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('POST', '/v1/backups', [])).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('POST', `/v1/backups/${full.id}/restore`, { volumeId: 'src', newVolume: {} })).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('POST', `/v1/backups/${full.id}/restore`, { newVolume: {}, force: true })).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('GET', '/v1/backups?volume=src')).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('DELETE', `/v1/backups/${full.id}?cascade=maybe`)).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('GET', '/v1/jobs/x?wait=600')).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('POST', '/v1/backups', { volumeId: 'nope' })).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('POST', '/v1/backups', { volumeId: 'src', target: 'elsewhere' })).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });

    expect(await server.call('POST', '/v1/backups', 'volumeId=src', { 'content-type': 'text/plain' })).toMatchObject({ status: 415, json: { error: { code: 'UNSUPPORTED_MEDIA_TYPE' } } });
    expect(await postOversized(server.url, '/v1/backups', JSON.stringify({ volumeId: 'x'.repeat(2 * MiB) }))).toMatchObject({ status: 413, json: { error: { code: 'PAYLOAD_TOO_LARGE' } } });
    expect(await server.call('GET', '/v1/nothing-here')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND', message: 'no route GET /v1/nothing-here' } } });
    const wrongMethod = await server.call('PUT', '/v1/backups', {});
    expect(wrongMethod).toMatchObject({ status: 405, json: { error: { code: 'METHOD_NOT_ALLOWED' } } });
    expect(wrongMethod.headers.get('allow')).toBe('GET, HEAD, POST');
    expect((await server.call('PATCH', `/v1/jobs/whatever`, {})).status).toBe(405);

    // A volume in another flow, or a backup depended on, is CONFLICT (409); a finished job cannot be cancelled.
    const jobs = (await server.call('GET', '/v1/jobs?state=succeeded&kind=backup')).json;
    expect(jobs.length).toBe(2);
    expect(await server.call('DELETE', `/v1/jobs/${jobs[0].id}`)).toMatchObject({ status: 409, json: { error: { code: 'CONFLICT', details: { state: 'succeeded' } } } });
    expect(await server.call('GET', '/v1/jobs/no-such-job')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect(await server.call('DELETE', '/v1/jobs/no-such-job')).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('export-record / import-record: another deployment reaching the same repository registers the backup and restores it byte-exact', async () => {
    const exported = await server.call('GET', `/v1/backups/${inc.id}/record`);
    expect(exported.status).toBe(200);
    expect(exported.json).toEqual({ service: 'posix', record: expect.any(String) });
    // This deployment's catalog already holds it.
    expect(await server.call('POST', '/v1/backups/import-record', exported.json)).toMatchObject({ status: 409, json: { error: { code: 'ALREADY_EXISTS' } } });
    expect(await server.call('POST', '/v1/backups/import-record', { service: 'posix', record: 'bm90IGEgcmVjb3Jk' })).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('POST', '/v1/backups/import-record', { service: 'posix' })).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });

    // Deployment 2: its own catalog (default target `home`), the first repository as target `posix`.
    const dir2 = join(cwd, 'second');
    await mkdir(dir2);
    const config = {
      version: 1,
      volumeDrivers: { file: { plugin: 'file', options: { directory: 'volumes' } } },
      targets: {
        home: { plugin: 'posix', options: { directory: 'repository', repository: { init: true } } },
        posix: { plugin: 'posix', options: { directory: join(cwd, '.cairn/repository') } },
      },
      defaultTarget: 'home',
    };
    await writeFile(join(dir2, 'cairn.config.json'), JSON.stringify(config));
    const second = await serve(dir2);
    try {
      expect((await second.call('GET', '/v1/backups')).json).toEqual([]);
      const imported = await second.call('POST', '/v1/backups/import-record', exported.json);
      expect(imported.status).toBe(201);
      expect(imported.headers.get('location')).toBe(`/v1/backups/${inc.id}`);
      expect(imported.json).toMatchObject({ id: inc.id, name: 'tuesday', target: 'posix', status: 'available', size: 4 * MiB });
      expect((await second.call('GET', `/v1/backups/${inc.id}`)).json).toMatchObject({ id: inc.id, status: 'available' });
      const restore = await second.call('POST', `/v1/backups/${inc.id}/restore`, { newVolume: { name: 'copy' } });
      expect((await settle(second, restore.json.id)).state).toBe('succeeded');
      expect((await volumeBytes(dir2, restore.json.volumeId)).equals(incData)).toBe(true);
    } finally {
      expect((await stop(second)).code).toBe(0);
    }
  });

  it('DELETE /v1/backups/:id deletes the record; then it is NOT_FOUND', async () => {
    expect(await server.call('DELETE', `/v1/backups/${inc.id}?cascade=false`)).toMatchObject({ status: 200, json: { deleted: inc.id } });
    expect(await server.call('GET', `/v1/backups/${inc.id}`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    expect((await server.call('GET', '/v1/backups')).json.map((b: any) => b.id)).toEqual([full.id]);
  });

  it('POST /v1/targets/:name/gc runs as a job: a dry run removes nothing, a real one frees the deleted incremental\'s chunks, and the full backup still restores byte-exact', async () => {
    expect(await server.call('GET', '/v1/targets/posix/locks')).toMatchObject({ status: 200, json: [] });
    const before = (await server.call('GET', '/v1/targets/posix/stats')).json;
    const dry = await server.call('POST', '/v1/targets/posix/gc', { graceSeconds: 0, dryRun: true });
    expect(dry.status).toBe(202);
    expect(dry.headers.get('location')).toBe(`/v1/jobs/${dry.json.id}`);
    const dryDone = await settle(server, dry.json.id);
    expect(dryDone).toMatchObject({ kind: 'gc', state: 'succeeded', target: 'posix', result: { backups: 1 } });
    expect(dryDone.result.bytesFreed).toBeGreaterThan(0);
    expect((await server.call('GET', '/v1/targets/posix/stats')).json.storedBytes).toBe(before.storedBytes);
    const real = await settle(server, (await server.call('POST', '/v1/targets/posix/gc', { graceSeconds: 0 })).json.id);
    expect(real).toMatchObject({ kind: 'gc', state: 'succeeded', result: { backups: 1 } });
    expect((await server.call('GET', '/v1/targets/posix/stats')).json.storedBytes).toBeLessThan(before.storedBytes);
    const restored = await settle(server, (await server.call('POST', `/v1/backups/${full.id}/restore`, { newVolume: {} })).json.id);
    expect(restored.state).toBe('succeeded');
    expect((await volumeBytes(cwd, restored.result.volume.id)).equals(fullData)).toBe(true);
    expect(await server.call('POST', '/v1/targets/posix/gc', { graceSeconds: -1 })).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('POST', '/v1/targets/nowhere/gc', {})).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
  });

  it('POST /v1/backups with readRate paces that backup alone; a rate that is not a positive number is 400 INVALID_INPUT', async () => {
    expect(await server.call('POST', '/v1/backups', { volumeId, readRate: -5 })).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    expect(await server.call('POST', '/v1/backups', { volumeId, readRate: '50MiB' })).toMatchObject({ status: 400, json: { error: { code: 'INVALID_INPUT' } } });
    const started = await server.call('POST', '/v1/backups', { volumeId, name: 'paced', incremental: true, readRate: 1024 * MiB });
    expect(started.status).toBe(202);
    expect(await settle(server, started.json.id)).toMatchObject({ state: 'succeeded', result: { name: 'paced', incremental: true } });
  });

  it('concurrent requests: backups of two volumes and reads at once all succeed on the one manager', async () => {
    const otherData = await writeRawImage(join(cwd, 'other.raw'), 4 * MiB);
    const other = (await cairnJson(['volume', 'import', join(cwd, 'other.raw'), '--name', 'other'], { cwd })).volume.id;
    const answers = await Promise.all([
      server.call('POST', '/v1/backups', { volumeId: 'src', name: 'together-1' }),
      server.call('POST', '/v1/backups', { volumeId: other, name: 'together-2' }),
      server.call('GET', '/v1/volumes'),
      server.call('GET', '/v1/backups'),
      server.call('GET', '/v1/jobs'),
      server.call('GET', '/v1/health'),
    ]);
    expect(answers.map((a) => a.status)).toEqual([202, 202, 200, 200, 200, 200]);
    const [a, b] = await Promise.all([settle(server, answers[0]!.json.id), settle(server, answers[1]!.json.id)]);
    expect([a.state, b.state]).toEqual(['succeeded', 'succeeded']);
    const restore = await server.call('POST', `/v1/backups/${b.backupId}/restore`, { newVolume: {} });
    expect((await settle(server, restore.json.id)).result.volume.name).toBe(`restore-${b.backupId}`);
    expect((await volumeBytes(cwd, restore.json.volumeId)).equals(otherData)).toBe(true);
  });
});

describe('cairn serve: bearer-token authentication', () => {
  let cwd: string;
  const token = randomBytes(24).toString('hex');

  beforeAll(async () => {
    cwd = await tempDir();
    await writeToken(cwd, token);
  });
  afterAll(() => removeDir(cwd));

  it('401 UNAUTHENTICATED without the token or with a wrong one, 200 with it; the token is never printed', async () => {
    const server = await serve(cwd, ['--token-file', join(cwd, 'token')], token);
    try {
      const bare = await fetch(`${server.url}/v1/health`);
      expect(bare.status).toBe(401);
      expect(bare.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(((await bare.json()) as ApiError).error.code).toBe('UNAUTHENTICATED');
      for (const authorization of [`Bearer ${token}x`, `Bearer ${token.slice(1)}`, `Basic ${token}`, 'Bearer']) {
        const r = await fetch(`${server.url}/v1/health`, { headers: { authorization } });
        expect(r.status, authorization).toBe(401);
        expect(((await r.json()) as ApiError).error.code).toBe('UNAUTHENTICATED');
      }
      // Unknown routes do not answer before authentication either.
      expect((await fetch(`${server.url}/v1/secret-route`)).status).toBe(401);
      expect(await server.call('GET', '/v1/health')).toMatchObject({ status: 200, json: { status: 'ok' } });
      expect(await server.call('GET', '/v1/secret-route')).toMatchObject({ status: 404 });
    } finally {
      const result = await stop(server);
      expect(result.code).toBe(0);
      expect(result.stdout + result.stderr).not.toContain(token);
    }
  });

  it('refuses to listen on a non-loopback address without a token (exit 2), and a bad token file', async () => {
    const open = await cairn(['serve', '--listen', '0.0.0.0:0', '--json'], { cwd });
    expect(open.code).toBe(2);
    expect(jsonError(open)).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('--token-file') });
    expect((await cairn(['serve', '--listen', 'localhost'], { cwd })).code).toBe(2);
    expect((await cairn(['serve', '--token-file', join(cwd, 'missing')], { cwd })).code).toBe(3);
    await writeFile(join(cwd, 'short'), 'abc\n');
    expect((await cairn(['serve', '--token-file', join(cwd, 'short')], { cwd })).code).toBe(2);
  });
});

describe('cairn serve: cancellation and shutdown', () => {
  let cwd: string;
  let volumeId: string;
  let server: Server;

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 8 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'slow'], { cwd })).volume.id;
    // 8 MiB read at 1 MiB/s: a backup runs for seconds, long enough to be cancelled.
    server = await serve(cwd, ['--read-rate', '1MiB']);
  });
  afterAll(async () => {
    if (server?.child.exitCode === null) await stop(server);
    await removeDir(cwd);
  });

  /** Nothing half-written: no available backup, the volume available and without snapshots, no repository locks. */
  async function expectClean(backupId: string): Promise<void> {
    const backups = await cairnJson(['backup', 'list'], { cwd });
    expect(backups.filter((b: { status: string }) => b.status === 'available')).toEqual([]);
    expect(backups.find((b: { id: string }) => b.id === backupId)).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^CANCELLED/) });
    expect(await cairnJson(['volume', 'show', volumeId], { cwd })).toMatchObject({ status: 'available', snapshots: [] });
    expect(await cairnJson(['repo', 'locks'], { cwd })).toEqual([]);
  }

  it('DELETE /v1/jobs/:id cancels a running backup: 202, then the job ends cancelled with CANCELLED', async () => {
    const started = await server.call('POST', '/v1/backups', { volumeId });
    expect(started.status).toBe(202);
    let view = started.json;
    for (let i = 0; i < 50 && view.progress.bytesDone === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      view = (await server.call('GET', `/v1/jobs/${view.id}`)).json;
    }
    expect(view.state).toBe('running');
    expect(view.progress.bytesDone).toBeGreaterThan(0);
    expect(view.progress.bytesDone).toBeLessThan(8 * MiB);
    expect((await server.call('GET', '/v1/backups')).json).toEqual([expect.objectContaining({ id: view.backupId, status: 'creating' })]);

    const cancel = await server.call('DELETE', `/v1/jobs/${view.id}`);
    expect(cancel.status).toBe(202);
    expect(cancel.json).toMatchObject({ id: view.id, cancelRequested: true });
    const ended = await settle(server, view.id);
    expect(ended).toMatchObject({ state: 'cancelled', cancelRequested: true, error: { code: 'CANCELLED' } });
    expect(ended.result).toBeUndefined();
    expect((await server.call('GET', `/v1/backups/${view.backupId}`)).json).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^CANCELLED/) });
    await expectClean(view.backupId);
  });

  it('SIGTERM: a request in flight is answered, the running job ends cancelled, the process exits 0', async () => {
    const started = await server.call('POST', '/v1/backups', { volumeId, name: 'in flight' });
    expect(started.status).toBe(202);
    const waiting = server.call('GET', `/v1/jobs/${started.json.id}?wait=30`);
    await new Promise((r) => setTimeout(r, 500));
    server.child.kill('SIGTERM');
    const answer = await waiting;
    expect(answer).toMatchObject({ status: 200, json: { id: started.json.id, state: 'cancelled', error: { code: 'CANCELLED' } } });
    const result = await server.exit;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/SIGTERM: shutting down, cancelling 1 running job/);
    await expectClean(started.json.backupId);
  });
});

describe('cairn serve over TLS (--tls-cert, --tls-key)', () => {
  let cwd: string;
  const token = randomBytes(24).toString('hex');

  /** A self-signed certificate for 127.0.0.1, made by openssl (Debian's `openssl`). */
  function certificate(name: string): { cert: string; key: string } {
    const cert = join(cwd, `${name}.crt`);
    const key = join(cwd, `${name}.key`);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=cairn-test', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    return { cert, key };
  }

  /** GET over HTTPS trusting only `ca`; resolves with the status and the JSON body. */
  function httpsGet(url: string, ca: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(url, { ca, headers }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, json: text ? JSON.parse(text) : undefined }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  beforeAll(async () => {
    cwd = await tempDir();
    await writeToken(cwd, token);
  });
  afterAll(() => removeDir(cwd));

  it('speaks HTTPS with the given pair: https:// in the address line, a client trusting the certificate gets answers, plain HTTP does not', async () => {
    const { cert, key } = certificate('server');
    const { child, exit } = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json', '--token-file', join(cwd, 'token'), '--tls-cert', cert, '--tls-key', key], { cwd });
    try {
      const { listening } = await addressLine(child, exit);
      expect(listening).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const ca = await readFile(cert);
      expect(await httpsGet(`${listening}/v1/health`, ca, { authorization: `Bearer ${token}` })).toMatchObject({ status: 200, json: { status: 'ok' } });
      expect(await httpsGet(`${listening}/v1/health`, ca)).toMatchObject({ status: 401, json: { error: { code: 'UNAUTHENTICATED' } } });
      // A client that does not trust the certificate refuses it; plain HTTP gets no API answer.
      await expect(httpsGet(`${listening}/v1/health`, await readFile(certificate('other').cert))).rejects.toThrow(/self.signed|certificate/i);
      const plain = await fetch(listening.replace('https:', 'http:') + '/v1/health').then((r) => r.status, () => 'refused');
      expect(plain).not.toBe(200);
    } finally {
      child.kill('SIGTERM');
      const result = await exit;
      expect(result.code).toBe(0);
    }
  });

  it('refuses a half or unusable pair before listening: one of the two (exit 2), a missing file (exit 3), a key of another certificate or not PEM (exit 2)', async () => {
    const a = certificate('a');
    const b = certificate('b');
    const run = (args: string[]) => cairn(['serve', '--listen', '127.0.0.1:0', '--json', ...args], { cwd });
    const half = await run(['--tls-cert', a.cert]);
    expect(half.code).toBe(2);
    expect(jsonError(half)).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('--tls-key') });
    expect((await run(['--tls-cert', join(cwd, 'missing.crt'), '--tls-key', a.key])).code).toBe(3);
    const mismatched = await run(['--tls-cert', a.cert, '--tls-key', b.key]);
    expect(mismatched.code).toBe(2);
    expect(jsonError(mismatched).code).toBe('INVALID_INPUT');
    expect(mismatched.stderr).not.toContain((await readFile(b.key, 'utf8')).split('\n')[1]);
    expect((await run(['--tls-cert', join(cwd, 'token'), '--tls-key', a.key])).code).toBe(2);
    // An endless file is refused after 1 MiB, not read until memory runs out.
    const endless = await run(['--tls-cert', a.cert, '--tls-key', '/dev/zero']);
    expect(endless.code).toBe(2);
    expect(jsonError(endless)).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('/dev/zero') });
  });
});
