/**
 * `cairn serve` and a backup's record status: a delete already in progress is refused, and a
 * backup whose record says it has no complete data is not verified.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

describe('cairn serve: what a backup record status allows', () => {
  let cwd: string;
  let server: ServedApi;
  let volumeId: string;

  /** Polls a job until it has ended and returns its view. */
  async function settle(jobId: string): Promise<any> {
    for (let i = 0; i < 30; i++) {
      const r = await server.call('GET', `/v1/jobs/${jobId}?wait=2`);
      expect(r.status).toBe(200);
      if (r.json.state !== 'running') return r.json;
    }
    throw new Error(`job ${jobId} did not end`);
  }

  /** A full backup of the volume, through the API; resolves with its record. */
  async function backup(): Promise<any> {
    const started = await server.call('POST', '/v1/backups', { volumeId });
    expect(started.status).toBe(202);
    const job = await settle(started.json.id);
    expect(job.state).toBe('succeeded');
    return job.result;
  }

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 4 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd })).volume.id;
    server = await serveApi(cwd);
  });
  afterAll(async () => {
    if (server?.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await server.exit;
    }
    await removeDir(cwd);
  });

  it('two DELETE /v1/backups/:id at once: one answers 200, the other 409 CONFLICT (status deleting) or 404, never two deletes', async () => {
    // Each pair is sent at once; the second request finds the record `deleting` unless the first
    // has ended before it reads the record (then 404): it waits for the first one's record section
    // (core's BackupClaims), which with a repository target is a lock object written to the store,
    // so it usually comes after the first delete has ended. The 409's shape is core's
    // (record-states.test.ts); here, every pair deletes once.
    for (let attempt = 0; attempt < 3; attempt++) {
      const b = await backup();
      const pair = await Promise.all([0, 1].map(() => server.call('DELETE', `/v1/backups/${b.id}`)));
      expect(pair.filter((r) => r.status === 200).map((r) => r.json)).toEqual([{ deleted: b.id }]);
      const other = pair.find((r) => r.status !== 200)!;
      if (other.status === 409) expect(other.json).toEqual({ error: { code: 'CONFLICT', message: expect.stringContaining('deleting'), details: { backupId: b.id, status: 'deleting' } } });
      else expect(other).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
      expect(await server.call('GET', `/v1/backups/${b.id}`)).toMatchObject({ status: 404, json: { error: { code: 'NOT_FOUND' } } });
    }
  });

  it('POST /v1/backups/:id/verify of a failed backup (error, no data) answers 409 CONFLICT naming the status and makes no job; `backup verify` exits 4', async () => {
    // 4 MiB at 64 KiB/s: still copying when it is cancelled, so it ends `error` with no data.
    const started = await server.call('POST', '/v1/backups', { volumeId, readRate: 64 * 1024 });
    expect(started.status).toBe(202);
    expect((await server.call('DELETE', `/v1/jobs/${started.json.id}`)).status).toBe(202);
    expect(await settle(started.json.id)).toMatchObject({ state: 'cancelled' });
    const failedId = started.json.backupId;
    expect((await server.call('GET', `/v1/backups/${failedId}`)).json).toMatchObject({ status: 'error' });

    const verify = await server.call('POST', `/v1/backups/${failedId}/verify`);
    expect(verify).toEqual({ status: 409, json: { error: { code: 'CONFLICT', message: expect.stringContaining('error'), details: { backupId: failedId, status: 'error' } } } });
    const verifyJobs = await server.call('GET', '/v1/jobs?kind=verify');
    expect(verifyJobs.status).toBe(200);
    expect(verifyJobs.json).toEqual([]);

    const cli = await cairn(['backup', 'verify', failedId, '--json'], { cwd });
    expect(cli.code).toBe(4);
    expect(jsonError(cli)).toMatchObject({ code: 'CONFLICT', details: { backupId: failedId, status: 'error' } });

    // An available backup verifies as before.
    const b = await backup();
    const ok = await server.call('POST', `/v1/backups/${b.id}/verify`);
    expect(await settle(ok.json.id)).toMatchObject({ state: 'succeeded', result: { checked: [b.id], problems: [] } });
  });
});
