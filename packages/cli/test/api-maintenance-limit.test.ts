import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnWithin, jsonError, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

/** Polls a job until it has ended (long-polling with ?wait) and returns its view. */
async function settle(server: ServedApi, jobId: string): Promise<any> {
  for (let i = 0; i < 30; i++) {
    const r = await server.call('GET', `/v1/jobs/${jobId}?wait=2`);
    if (r.json.state !== 'running') return r.json;
  }
  throw new Error(`job ${jobId} did not end`);
}

/** docs/api.md, "Jobs": a server runs at most `--max-maintenance-jobs` verify and gc jobs at once (default 2); one more is BUSY. */
describe('cairn serve: the limit on verify and gc jobs', () => {
  let cwd: string;
  let backupId: string;
  let server: ServedApi | undefined;

  beforeAll(async () => {
    cwd = await tempDir();
    // Random data: each verify reads and checks 64 MiB, long enough to still run when the next request comes.
    await writeRawImage(join(cwd, 'v.raw'), 64 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'v'], { cwd })).id;
  }, 120_000);
  afterAll(async () => {
    const r = await server?.stop();
    expect(r?.code ?? 0, r?.stderr).toBe(0);
    await removeDir(cwd);
  });

  it('by default two verify jobs run at once: a third started meanwhile is 409 BUSY {running, limit}, starts nothing, and is accepted once they end', async () => {
    server = await serveApi(cwd);
    const answers = await Promise.all([
      server.call('POST', `/v1/backups/${backupId}/verify`),
      server.call('POST', '/v1/verify', {}),
      server.call('POST', `/v1/backups/${backupId}/verify`),
    ]);
    expect(answers.map((a) => a.status).sort()).toEqual([202, 202, 409]);
    const refused = answers.find((a) => a.status === 409)!;
    expect(refused.json.error).toMatchObject({ code: 'BUSY', details: { running: 2, limit: 2 } });
    const started = answers.filter((a) => a.status === 202);
    expect((await server.call('GET', '/v1/jobs?kind=verify')).json).toHaveLength(2); // the refused request made no job
    for (const a of started) expect(await settle(server, a.json.id)).toMatchObject({ kind: 'verify', state: 'succeeded' });
    const later = await server.call('POST', `/v1/backups/${backupId}/verify`);
    expect(later.status).toBe(202);
    expect(await settle(server, later.json.id)).toMatchObject({ state: 'succeeded' });
    expect((await server.stop()).code).toBe(0);
    server = undefined;
  }, 120_000);

  it('--max-maintenance-jobs 1: a gc while a verify runs is BUSY; after it, the gc runs', async () => {
    server = await serveApi(cwd, ['--max-maintenance-jobs', '1', '--keep-jobs', '50']);
    const verify = await server.call('POST', '/v1/verify', {});
    expect(verify.status).toBe(202);
    const gc = await server.call('POST', '/v1/targets/posix/gc', { dryRun: true });
    expect(gc).toMatchObject({ status: 409, json: { error: { code: 'BUSY', details: { running: 1, limit: 1 } } } });
    expect(await settle(server, verify.json.id)).toMatchObject({ state: 'succeeded' });
    const again = await server.call('POST', '/v1/targets/posix/gc', { dryRun: true });
    expect(again.status).toBe(202);
    expect(await settle(server, again.json.id)).toMatchObject({ kind: 'gc', state: 'succeeded' });
  }, 120_000);

  it('--max-maintenance-jobs 1: a reset-state to available (it verifies) counts as a verify; one to error does not', async () => {
    server = await serveApi(cwd, ['--max-maintenance-jobs', '1', '--keep-jobs', '50']);
    const verify = await server.call('POST', '/v1/verify', {});
    expect(verify.status).toBe(202);
    const reset = await server.call('POST', `/v1/backups/${backupId}/reset-state`, { state: 'available' });
    expect(reset).toMatchObject({ status: 409, json: { error: { code: 'BUSY', details: { running: 1, limit: 1 } } } });
    // A reset to error reads no data: not counted (an unknown backup is its 404, not BUSY).
    expect((await server.call('POST', '/v1/backups/no-such-backup/reset-state', { state: 'error' })).status).toBe(404);
    expect(await settle(server, verify.json.id)).toMatchObject({ state: 'succeeded' });
    // Running, the reset to available holds the one place: a verify meanwhile is BUSY.
    const running = await server.call('POST', `/v1/backups/${backupId}/reset-state`, { state: 'available' });
    expect(running.status).toBe(202);
    expect(await server.call('POST', '/v1/verify', {})).toMatchObject({ status: 409, json: { error: { code: 'BUSY', details: { running: 1, limit: 1 } } } });
    expect(await settle(server, running.json.id)).toMatchObject({ kind: 'reset-state', state: 'succeeded', result: { status: 'available' } });
    expect((await server.call('POST', '/v1/verify', {})).status).toBe(202);
    expect((await server.stop()).code).toBe(0);
    server = undefined;
  }, 120_000);

  it('--max-maintenance-jobs takes a whole number from 1 to 64: anything else is a usage error (exit 2)', async () => {
    for (const bad of ['0', '65', '1.5', 'two', '-1']) {
      expect((await cairn(['serve', '--listen', '127.0.0.1:0', '--max-maintenance-jobs', bad], { cwd })).code, bad).toBe(2);
    }
  });

  it('--keep-jobs takes a whole number from 1 to 10000 in decimal digits: an exponent, a hex number or spaces are a usage error (exit 2), INVALID_INPUT', async () => {
    for (const bad of ['0', '10001', '1.5', 'two', '-1', '1e3', ' 5', '0x10', '']) {
      // Killed if it starts serving (a value taken), so the test fails instead of hanging.
      const r = await cairnWithin(15_000, ['serve', '--listen', '127.0.0.1:0', '--json', '--keep-jobs', bad], cwd);
      expect(r.code, bad).toBe(2);
      expect(jsonError(r).code, bad).toBe('INVALID_INPUT');
    }
  });
});
