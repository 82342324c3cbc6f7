import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { apiJob, JobTable, type JobView } from '../src/api/jobs.js';
import { MAX_WAIT_SECONDS } from '../src/api/routes-jobs.js';
import { ApiServer } from '../src/api/server.js';
import { DEFAULT_TIMEOUTS, longestWaitMs } from '../src/api/server-timeouts.js';
import type { ApiContext } from '../src/api/api-context.js';
import { cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

// Long-polls (`GET /v1/jobs/:id?wait=`) that the connection limits or the client end.

/** A job that runs until cancelled (the real apiJob, its work waiting on its signal). */
const untilCancelled = () => apiJob({ kind: 'gc' }, (signal) => new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason))));

describe('cairn serve: a long-poll and the connection timeout', () => {
  let cwd: string;
  let volumeId: string;
  const children: ReturnType<typeof cairnSpawn>[] = [];
  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 8 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'slow'], { cwd })).volume.id;
  });
  afterEach(() => {
    for (const { child } of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  afterAll(() => removeDir(cwd));

  it('with the default connection timeout a long-poll may wait the whole MAX_WAIT_SECONDS; a shorter timeout shortens it', () => {
    expect(longestWaitMs(DEFAULT_TIMEOUTS)).toBe(MAX_WAIT_SECONDS * 1000);
    expect(longestWaitMs({ connectionTimeoutMs: 30_000 })).toBe(29_000);
    expect(longestWaitMs({ connectionTimeoutMs: 1_000 })).toBe(500);
  });

  it('a ?wait= longer than CAIRN_SERVE_CONNECTION_TIMEOUT_MS is answered (the job still running) before the timeout would cut the connection', async () => {
    const spawned = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json', '--read-rate', '256KiB'], { cwd, env: { CAIRN_SERVE_CONNECTION_TIMEOUT_MS: '2000' } });
    children.push(spawned);
    const base = await new Promise<string>((resolve, reject) => {
      let text = '';
      spawned.child.stdout!.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes('\n')) resolve(JSON.parse(text.slice(0, text.indexOf('\n'))).listening);
      });
      void spawned.exit.then((r) => reject(new Error(`serve exited early with ${r.code}: ${r.stderr}`)));
    });
    const started = await fetch(`${base}/v1/backups`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ volumeId }) });
    expect(started.status).toBe(202);
    const job = (await started.json()) as JobView;
    // 8 MiB at 256 KiB/s: the backup outlasts the poll. Before, the connection was closed with no answer.
    const polled = await fetch(`${base}/v1/jobs/${job.id}?wait=5`).then(
      async (r) => ({ status: r.status, json: await r.json() }),
      (err: unknown) => ({ status: 0, json: { failed: String((err as Error)?.cause ?? err) } }),
    );
    expect(polled).toMatchObject({ status: 200, json: { id: job.id, state: 'running' } });
    spawned.child.kill('SIGTERM');
    const exit = await spawned.exit;
    expect(exit.code, exit.stderr).toBe(0);
    expect((await cairnJson(['backup', 'show', job.id], { cwd })).status).toBe('error');
  }, 30_000);
});

describe('cairn serve: a long-poll whose client goes away', () => {
  it('JobTable.wait ends at once when its signal aborts, with the job still running', async () => {
    const table = new JobTable();
    const view = table.add(untilCancelled());
    const gone = new AbortController();
    const waiting = table.wait(view.id, 60_000, gone.signal);
    gone.abort();
    expect(await waiting).toMatchObject({ id: view.id, state: 'running' });
    // An already aborted signal does not wait either.
    expect(await table.wait(view.id, 60_000, gone.signal)).toMatchObject({ state: 'running' });
    await table.shutdown();
    expect(table.get(view.id)).toMatchObject({ state: 'cancelled' });
  }, 10_000);

  it('GET /v1/jobs/:id?wait=60 whose client disconnects ends its wait at once: nothing is kept for it', async () => {
    let began = 0;
    const ended: JobView[] = [];
    // The real table; only counts the waits that began and those that have returned.
    class CountingTable extends JobTable {
      override async wait(id: string, ms: number, signal?: AbortSignal): Promise<JobView> {
        began++;
        const view = await super.wait(id, ms, signal);
        ended.push(view);
        return view;
      }
    }
    const jobs = new CountingTable();
    const server = new ApiServer({ jobs, version: 'test' } as unknown as ApiContext, { timeouts: { drainTimeoutMs: 100 } });
    const { url } = await server.listen({ host: '127.0.0.1', port: 0 });
    try {
      const view = jobs.add(untilCancelled());
      const client = new AbortController();
      const poll = fetch(`${url}/v1/jobs/${view.id}?wait=60`, { signal: client.signal }).catch((err: unknown) => err);
      while (began === 0) await new Promise((r) => setTimeout(r, 10));
      client.abort();
      expect(await poll).toMatchObject({ name: 'AbortError' });
      // Before, the wait went on for its 60 s (past this test's timeout) with no one to answer.
      while (ended.length === 0) await new Promise((r) => setTimeout(r, 10));
      expect(ended).toEqual([expect.objectContaining({ id: view.id, state: 'running' })]);
    } finally {
      await server.shutdown();
    }
  }, 20_000);
});
