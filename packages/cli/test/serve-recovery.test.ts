import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnSpawn, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `read` every 100 ms until `done` holds of its value (at most `ms`); returns the last value. */
async function until<T>(read: () => Promise<T>, done: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (done(v) || Date.now() > end) return v;
    await sleep(100);
  }
}

/** A server re-runs recovery while it runs: what a killed CLI process left in flight is resolved without a restart. */
describe('cairn serve --recover-interval', () => {
  let cwd: string;
  let volumeId: string;
  let server: ServedApi;
  const get = async (path: string) => (await fetch(`${server.url}${path}`)).json() as Promise<any>;

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 8 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd })).volume.id;
    server = await serveApi(cwd, ['--recover-interval', '0.3']);
  });
  afterAll(async () => {
    const r = await server?.stop();
    expect(r?.code, r?.stderr).toBe(0);
    await removeDir(cwd);
  });

  it('a backup left creating by a SIGKILLed `cairn backup create` goes to error and its volume back to available; while the process lived it was left alone', async () => {
    // 8 MiB at 512 KiB/s: about 16 s, so it is still running when killed.
    const { child, exit } = cairnSpawn(['backup', 'create', volumeId, '--read-rate', '512KiB', '--json'], { cwd });
    try {
      const seen = await until(() => get('/v1/backups'), (list: any[]) => list.some((b) => b.status === 'creating'));
      const backup = seen.find((b: any) => b.status === 'creating');
      expect(backup, 'the backup never showed up creating').toBeDefined();
      await sleep(1500); // five recovery runs while the process is alive
      expect(await get(`/v1/backups/${backup.id}`)).toMatchObject({ status: 'creating' });
      expect(await get(`/v1/volumes/${volumeId}`)).toMatchObject({ status: 'backing-up' });
      child.kill('SIGKILL');
      await exit;
      const after = await until(() => get(`/v1/backups/${backup.id}`), (b) => b.status !== 'creating');
      expect(after).toMatchObject({ status: 'error', failReason: expect.stringContaining('interrupted') });
      expect(await until(() => get(`/v1/volumes/${volumeId}`), (v) => v.status === 'available')).toMatchObject({ status: 'available' });
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it("the server's own backup and restore jobs run across many recovery runs and end as usual", async () => {
    const post = async (path: string, body: unknown) => (await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json() as Promise<any>;
    const settle = (id: string) => until(() => get(`/v1/jobs/${id}?wait=2`), (j) => j.state !== 'running', 60_000);
    // 8 MiB at 2 MiB/s: about 4 s, a dozen recovery runs.
    const backup = await settle((await post('/v1/backups', { volumeId, readRate: 2 * MiB })).id);
    expect(backup).toMatchObject({ state: 'succeeded', result: { status: 'available' } });
    const restore = await settle((await post(`/v1/backups/${backup.result.id}/restore`, { newVolume: {} })).id);
    expect(restore).toMatchObject({ state: 'succeeded', result: { backup: { status: 'available' }, volume: { status: 'available' } } });
  });

  it('--recover-interval takes seconds from 0 to 86400: anything else is a usage error (exit 2)', async () => {
    for (const bad of ['soon', '-1', '86401']) {
      expect((await cairn(['serve', '--listen', '127.0.0.1:0', '--recover-interval', bad], { cwd })).code, bad).toBe(2);
    }
  });
});
