import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeRawImage, type CliResult } from './helpers.js';

type Spawned = ReturnType<typeof cairnSpawn>;

/** Connection limits of `cairn serve`: a slow or stuck client can neither hold a connection nor keep the server from stopping. */
describe('cairn serve timeouts', () => {
  let cwd: string;
  let volumeId: string;
  const servers: Spawned[] = [];
  const sockets: Socket[] = [];

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 8 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'slow'], { cwd })).volume.id;
  });
  afterEach(() => {
    for (const s of sockets.splice(0)) s.destroy();
    for (const { child } of servers.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  afterAll(() => removeDir(cwd));

  /** Starts `cairn serve` on a free port with `env` and resolves with its port once listening. */
  async function serve(env: Record<string, string>, args: string[] = []): Promise<Spawned & { port: number }> {
    const spawned = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json', ...args], { cwd, env });
    servers.push(spawned);
    const port = await new Promise<number>((resolve, reject) => {
      let text = '';
      spawned.child.stdout!.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes('\n')) resolve(JSON.parse(text.slice(0, text.indexOf('\n'))).port);
      });
      void spawned.exit.then((r) => reject(new Error(`serve exited early with ${r.code}: ${r.stderr}`)));
    });
    return { ...spawned, port };
  }

  /** Sends headers promising a 100-byte body and only 5 bytes of it; resolves with the socket once they are written. */
  async function partialBody(port: number): Promise<Socket> {
    const socket = connect(port, '127.0.0.1');
    sockets.push(socket);
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write(`POST /v1/backups HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"vol`);
    return socket;
  }

  const closedWithin = (socket: Socket, ms: number) =>
    new Promise<boolean>((resolve) => {
      if (socket.destroyed || socket.readableEnded) return resolve(true);
      const timer = setTimeout(() => resolve(false), ms);
      socket.once('close', () => (clearTimeout(timer), resolve(true)));
    });

  const exitWithin = (exit: Promise<CliResult>, ms: number) => Promise.race([exit, new Promise<undefined>((r) => setTimeout(() => r(undefined), ms))]);

  it('SIGTERM ends the server within the drain timeout although a client never finishes its body', async () => {
    const server = await serve({ CAIRN_SERVE_DRAIN_TIMEOUT_MS: '300' });
    const socket = await partialBody(server.port);
    await new Promise((r) => setTimeout(r, 300)); // the request is in flight on the server
    server.child.kill('SIGTERM');
    const result = await exitWithin(server.exit, 8_000);
    expect(result, 'the server still runs 8 s after SIGTERM').toBeDefined();
    expect(result!.code, result!.stderr).toBe(0);
    expect(await closedWithin(socket, 1_000)).toBe(true);
  });

  /**
   * Everything the server sends on `socket` until it closes. The timed-out request is always
   * answered: the server writes the whole answer into the socket (a write to an idle socket
   * completes at once) before it destroys it, and it has read every byte the client sent, so the
   * close is a FIN after the answer, never a reset that could discard it.
   */
  const receivedUntilClosed = (socket: Socket) =>
    new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
      socket.once('close', () => resolve(text));
    });

  it('a request whose body does not arrive within the request timeout is answered 408 REQUEST_TIMEOUT and its connection closed', async () => {
    const server = await serve({ CAIRN_SERVE_REQUEST_TIMEOUT_MS: '500' });
    const socket = await partialBody(server.port);
    const answer = receivedUntilClosed(socket);
    expect(await closedWithin(socket, 5_000)).toBe(true);
    // With the API's error shape, like every error (docs/api.md, "Errors"), whole.
    const [head = '', body = ''] = (await answer).split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 408 /);
    expect(Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1])).toBe(Buffer.byteLength(body, 'latin1'));
    expect(JSON.parse(body)).toMatchObject({ error: { code: 'REQUEST_TIMEOUT' } });
    server.child.kill('SIGTERM');
    expect((await server.exit).code).toBe(0);
  });

  it('a long-poll (?wait=) outlasts the request timeout and is answered; SIGTERM then cancels the job and exits 0', async () => {
    const server = await serve({ CAIRN_SERVE_REQUEST_TIMEOUT_MS: '500' }, ['--read-rate', '512KiB']);
    const base = `http://127.0.0.1:${server.port}`;
    const started = await fetch(`${base}/v1/backups`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ volumeId }) });
    expect(started.status).toBe(202);
    const job = (await started.json()) as { id: string };
    const polled = await fetch(`${base}/v1/jobs/${job.id}?wait=2`);
    expect(polled.status).toBe(200);
    expect(await polled.json()).toMatchObject({ id: job.id, state: 'running' });
    server.child.kill('SIGTERM');
    const result = await exitWithin(server.exit, 15_000);
    expect(result?.code, result?.stderr).toBe(0);
    expect(result!.stderr).toMatch(/cancelling 1 running job/);
  });

  it('--max-connections caps the connections held open: one more is closed unanswered', async () => {
    const server = await serve({ CAIRN_SERVE_KEEPALIVE_TIMEOUT_MS: '600000' }, ['--max-connections', '1', '--keep-jobs-bytes', '64KiB']);
    const held = connect(server.port, '127.0.0.1');
    sockets.push(held);
    const answered = new Promise<string>((resolve) => held.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
    held.write('GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(await answered).toMatch(/^HTTP\/1\.1 200 [^]*"connections":\{"open":1,"limit":1,"refused":0\}/);
    const extra = connect(server.port, '127.0.0.1');
    sockets.push(extra);
    extra.on('error', () => {});
    const received = receivedUntilClosed(extra);
    expect(await closedWithin(extra, 5_000)).toBe(true);
    expect(await received).toBe('');
    server.child.kill('SIGTERM');
    expect((await server.exit).code).toBe(0);
  });

  it.each([
    ['--max-connections', '0', 'a whole number from 1 to 10000'],
    ['--keep-jobs-bytes', '1000', 'a size from 1KiB to 16GiB'],
  ])('%s %s is refused (exit 2)', async (option, value, range) => {
    const spawned = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json', option, value], { cwd });
    servers.push(spawned);
    const result = await exitWithin(spawned.exit, 10_000);
    expect(result?.code, result?.stderr).toBe(2);
    expect(result!.stderr).toContain(`${option} takes ${range}`);
  });

  it('an invalid timeout in the environment is refused (INVALID_INPUT, exit 2)', async () => {
    const spawned = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json'], { cwd, env: { CAIRN_SERVE_REQUEST_TIMEOUT_MS: 'soon' } });
    servers.push(spawned);
    const result = await exitWithin(spawned.exit, 10_000);
    expect(result?.code, result?.stderr).toBe(2);
    expect(result!.stderr).toMatch(/CAIRN_SERVE_REQUEST_TIMEOUT_MS/);
  });
});
