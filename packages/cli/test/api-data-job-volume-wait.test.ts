import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

/**
 * docs/api.md, "Concurrency": a job waits before it runs either for a place (`--max-data-jobs`) or
 * behind another backup or restore of its volume; its view says which (`queuedFor`) with its place
 * in that line, and `GET /v1/health` counts both in `jobs.queued`. A backup that must stay
 * running reads its volume at `readRate: 1` (see api-data-jobs-limit.test.ts).
 */
describe('cairn serve: a job queued behind another flow of its volume is shown queued', () => {
  let cwd: string;
  let server: ServedApi | undefined;

  beforeAll(async () => {
    cwd = await tempDir();
    for (const name of ['a', 'b']) {
      await writeRawImage(join(cwd, `${name}.raw`), 4 * MiB);
      await cairnJson(['volume', 'import', join(cwd, `${name}.raw`), '--name', name], { cwd });
    }
  }, 120_000);
  afterAll(async () => {
    const r = await server?.stop();
    expect(r?.code ?? 0, r?.stderr).toBe(0);
    await removeDir(cwd);
  });

  it('at 1: the backup waiting for a place shows queuedFor data-jobs, two more of its volume queuedFor volume in request order; each runs in turn', async () => {
    server = await serveApi(cwd, ['--max-data-jobs', '1']);
    const post = async (body: object) => {
      const r = await server!.call('POST', '/v1/backups', body);
      expect(r.status, JSON.stringify(r.json)).toBe(202);
      return r.json.id as string;
    };
    const view = async (id: string) => (await server!.call('GET', `/v1/jobs/${id}`)).json;
    const first = await post({ volumeId: 'a', readRate: 1 });
    for (let i = 0; i < 100 && (await view(first)).progress.bytesDone === 0; i++) await new Promise((r) => setTimeout(r, 100));
    const waiting = await post({ volumeId: 'b' });
    const behind = await post({ volumeId: 'b' });
    const last = await post({ volumeId: 'b' });
    expect(await view(first)).not.toHaveProperty('queued');
    expect(await view(waiting)).toMatchObject({ state: 'running', queued: true, queuedFor: 'data-jobs', queuePosition: 1 });
    expect(await view(behind)).toMatchObject({ state: 'running', queued: true, queuedFor: 'volume', queuePosition: 1, progress: { bytesDone: 0 } });
    expect(await view(last)).toMatchObject({ state: 'running', queued: true, queuedFor: 'volume', queuePosition: 2 });
    expect((await server.call('GET', '/v1/health')).json).toMatchObject({ jobs: { running: 4, queued: 3 } });

    await server.call('DELETE', `/v1/jobs/${first}`);
    for (const id of [waiting, behind, last]) {
      let ended: any;
      for (let i = 0; i < 30 && (ended = (await server.call('GET', `/v1/jobs/${id}?wait=2`)).json).state === 'running'; i++);
      expect(ended, id).toMatchObject({ state: 'succeeded', result: { status: 'available' } });
      expect(ended).not.toHaveProperty('queued');
      expect(ended).not.toHaveProperty('queuedFor');
    }
    const backups = (await server.call('GET', '/v1/backups?volumeId=b')).json as any[];
    expect(backups.map((b) => b.id)).toEqual([waiting, behind, last]);
    expect((await server.call('GET', '/v1/health')).json).toMatchObject({ jobs: { running: 0, queued: 0 } });
    const r = await server.stop();
    server = undefined;
    expect(r.code, r.stderr).toBe(0);
  }, 120_000);
});
