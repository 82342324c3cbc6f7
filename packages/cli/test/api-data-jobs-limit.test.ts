import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnWithin, jsonError, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

/**
 * docs/api.md, "Concurrency": a server runs at most `--max-data-jobs` backups and restores at
 * once (default 4; 0: no limit). One more is accepted (202) and waits in line, first come first
 * served, shown `running` with `queued: true` and its `queuePosition`; it can be cancelled while it
 * waits, and shutdown cancels it, having touched neither its volume nor the repository's data.
 *
 * A backup that must stay running reads its volume at `readRate: 1` (1 byte a second): its first
 * 1 MiB unit is granted, the next one not for days, so it runs until cancelled.
 */

const VOLUMES = ['a', 'b', 'c', 'd', 'e'];

/** Polls a job until it has ended (long-polling with ?wait) and returns its view. */
async function settle(server: ServedApi, jobId: string): Promise<any> {
  for (let i = 0; i < 30; i++) {
    const r = await server.call('GET', `/v1/jobs/${jobId}?wait=2`);
    if (r.json.state !== 'running') return r.json;
  }
  throw new Error(`job ${jobId} did not end`);
}

/** Reads job `jobId` until `done` holds of its view (up to 100 reads, 100 ms apart), and returns the last view. */
async function viewUntil(server: ServedApi, jobId: string, done: (view: any) => boolean): Promise<any> {
  let view: any;
  for (let i = 0; i < 100; i++) {
    view = (await server.call('GET', `/v1/jobs/${jobId}`)).json;
    if (done(view)) return view;
    await new Promise((r) => setTimeout(r, 100));
  }
  return view;
}

/** Starts a backup of `volume` (a job) and returns its 202 view; `slow`: one that runs until cancelled. */
async function backup(server: ServedApi, volume: string, slow = false): Promise<any> {
  const r = await server.call('POST', '/v1/backups', slow ? { volumeId: volume, readRate: 1 } : { volumeId: volume });
  expect(r.status, JSON.stringify(r.json)).toBe(202);
  return r.json;
}

/** A job is running, its place held (not waiting in line): it may be reading its volume. */
const holdsPlace = (v: any) => v.state === 'running' && v.queued === undefined;

describe('cairn serve --max-data-jobs: backups and restores beyond the limit wait in line', () => {
  let cwd: string;
  let earlier: any;
  let server: ServedApi | undefined;

  beforeAll(async () => {
    cwd = await tempDir();
    for (const name of VOLUMES) {
      await writeRawImage(join(cwd, `${name}.raw`), 4 * MiB);
      await cairnJson(['volume', 'import', join(cwd, `${name}.raw`), '--name', name], { cwd });
    }
    earlier = await cairnJson(['backup', 'create', 'e'], { cwd });
  }, 120_000);
  afterAll(async () => {
    const r = await server?.stop();
    expect(r?.code ?? 0, r?.stderr).toBe(0);
    await removeDir(cwd);
  });

  const stop = async () => {
    const r = await server!.stop();
    server = undefined;
    expect(r.code, r.stderr).toBe(0);
  };

  /** Serves `cwd` with `args`; the server is kept for `stop()` (and for afterAll, when a test fails first). */
  const serve = async (args: string[] = []): Promise<ServedApi> => (server = await serveApi(cwd, args));

  /**
   * Serves `cwd` at `--max-data-jobs 1` and starts a backup of `a` that runs until cancelled,
   * holding the only place; resolves with the server and that backup's 202 view.
   */
  const serveOneRunning = async (): Promise<{ server: ServedApi; first: any }> => {
    const served = await serve(['--max-data-jobs', '1']);
    const first = await backup(served, 'a', true);
    expect(await viewUntil(served, first.id, holdsPlace)).toMatchObject({ state: 'running' });
    return { server: served, first };
  };

  it('at 1: a second and a third backup wait in order, their volumes untouched, until each one before them has ended; verify and gc do not wait', async () => {
    const server = await serve(['--max-data-jobs', '1']);
    const first = await backup(server, 'a', true);
    const second = await backup(server, 'b', true);
    const third = await backup(server, 'c');
    expect(await viewUntil(server, first.id, holdsPlace)).toMatchObject({ state: 'running' });
    expect((await server.call('GET', `/v1/jobs/${second.id}`)).json).toMatchObject({ state: 'running', queued: true, queuePosition: 1, progress: { bytesDone: 0 }, cancelRequested: false });
    expect((await server.call('GET', `/v1/jobs/${third.id}`)).json).toMatchObject({ state: 'running', queued: true, queuePosition: 2, progress: { bytesDone: 0 } });
    expect((await server.call('GET', '/v1/jobs?state=running')).json).toHaveLength(3);
    expect((await server.call('GET', '/v1/health')).json).toMatchObject({ jobs: { running: 3, queued: 2 } });
    // Waiting, a backup is as one queued behind another flow of its volume: its record is
    // `creating`, its volume has no flow state (not `backing-up`).
    expect((await server.call('GET', `/v1/backups/${second.id}`)).json).toMatchObject({ status: 'creating' });
    expect((await server.call('GET', '/v1/volumes/b')).json).toMatchObject({ status: 'available' });
    expect((await server.call('GET', '/v1/volumes/c')).json).toMatchObject({ status: 'available' });

    // Verify and gc have their own limit: they run (and end) while the backups wait.
    const verify = await server.call('POST', `/v1/backups/${earlier.id}/verify`);
    expect(verify.status).toBe(202);
    expect(await settle(server, verify.json.id)).toMatchObject({ kind: 'verify', state: 'succeeded' });
    const gc = await server.call('POST', '/v1/targets/posix/gc', { dryRun: true });
    expect(gc.status).toBe(202);
    const gcEnded = await settle(server, gc.json.id);
    expect(gcEnded.queued).toBeUndefined(); // it ran: ended (BUSY: the running backup holds the repository's shared lock)
    expect((await server.call('GET', `/v1/jobs/${second.id}`)).json).toMatchObject({ queued: true, queuePosition: 1 });

    // The first ends: the second takes its place, the third moves up and still waits.
    await server.call('DELETE', `/v1/jobs/${first.id}`);
    expect(await settle(server, first.id)).toMatchObject({ state: 'cancelled' });
    expect(await viewUntil(server, second.id, holdsPlace)).toMatchObject({ state: 'running' });
    expect(await viewUntil(server, second.id, (v) => v.progress.bytesDone > 0)).toMatchObject({ state: 'running' });
    expect((await server.call('GET', `/v1/jobs/${third.id}`)).json).toMatchObject({ state: 'running', queued: true, queuePosition: 1, progress: { bytesDone: 0 } });
    expect((await server.call('GET', '/v1/volumes/b')).json).toMatchObject({ status: 'backing-up' });
    expect((await server.call('GET', '/v1/volumes/c')).json).toMatchObject({ status: 'available' });

    // The second ends: the third runs, and completes.
    await server.call('DELETE', `/v1/jobs/${second.id}`);
    expect(await settle(server, second.id)).toMatchObject({ state: 'cancelled' });
    const done = await settle(server, third.id);
    expect(done).toMatchObject({ state: 'succeeded', result: { id: third.id, status: 'available', size: 4 * MiB } });
    expect(done.queued).toBeUndefined();
    expect((await server.call('GET', '/v1/health')).json).toMatchObject({ jobs: { running: 0, queued: 0 } });
    await stop();
  }, 120_000);

  it('at 1: the 202 of a backup or restore that will wait for a place says so (queued, queuedFor data-jobs, its position)', async () => {
    const { server } = await serveOneRunning();
    const waiting = await backup(server, 'b');
    expect(waiting).toMatchObject({ state: 'running', queued: true, queuedFor: 'data-jobs', queuePosition: 1, progress: { bytesDone: 0 } });
    const restore = await server.call('POST', `/v1/backups/${earlier.id}/restore`, { newVolume: { name: 'restored-queued' } });
    expect(restore.status).toBe(202);
    expect(restore.json).toMatchObject({ kind: 'restore', state: 'running', queued: true, queuedFor: 'data-jobs', queuePosition: 2 });
    await stop();
  }, 120_000);

  it('a waiting backup or restore cancelled ends cancelled at once, having touched nothing; the job before it runs on', async () => {
    const { server, first } = await serveOneRunning();
    const waiting = await backup(server, 'b');
    const restore = await server.call('POST', `/v1/backups/${earlier.id}/restore`, { newVolume: { name: 'restored' } });
    expect(restore.status).toBe(202);
    expect((await server.call('GET', `/v1/jobs/${restore.json.id}`)).json).toMatchObject({ kind: 'restore', state: 'running', queued: true, queuePosition: 2, progress: { bytesDone: 0 } });
    const locks = (await server.call('GET', '/v1/targets/posix/locks')).json;

    const asked = await server.call('DELETE', `/v1/jobs/${waiting.id}`);
    expect(asked).toMatchObject({ status: 202, json: { cancelRequested: true } });
    const ended = await settle(server, waiting.id);
    expect(ended).toMatchObject({ state: 'cancelled', error: { code: 'CANCELLED' }, progress: { bytesDone: 0 } });
    expect(ended.queued).toBeUndefined();
    // The record ends `error` (as any cancelled backup's), with no data: the repository holds
    // nothing of it, and took no lock for it; the volume never entered a flow.
    const record = (await server.call('GET', `/v1/backups/${waiting.id}`)).json;
    expect(record).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^CANCELLED/) });
    expect(record.stats).toBeUndefined();
    expect((await server.call('GET', '/v1/volumes/b')).json).toMatchObject({ status: 'available' });
    expect((await server.call('GET', '/v1/targets/posix/locks')).json).toEqual(locks);

    // The restore moved up; cancelled too, its new volume is deleted and the backup back to available.
    expect((await server.call('GET', `/v1/jobs/${restore.json.id}`)).json).toMatchObject({ queued: true, queuePosition: 1 });
    await server.call('DELETE', `/v1/jobs/${restore.json.id}`);
    expect(await settle(server, restore.json.id)).toMatchObject({ state: 'cancelled', error: { code: 'CANCELLED' }, progress: { bytesDone: 0 } });
    expect(((await server.call('GET', '/v1/volumes')).json as any[]).map((v) => v.name)).not.toContain('restored');
    expect((await server.call('GET', `/v1/backups/${earlier.id}`)).json).toMatchObject({ status: 'available' });

    expect((await server.call('GET', `/v1/jobs/${first.id}`)).json).toMatchObject({ state: 'running', cancelRequested: false });
    expect((await server.call('GET', '/v1/volumes/a')).json).toMatchObject({ status: 'backing-up' });
    await stop();
  }, 120_000);

  it('at 1, a restore waits for a running backup as a backup does, then restores', async () => {
    const { server, first } = await serveOneRunning();
    const restore = await server.call('POST', `/v1/backups/${earlier.id}/restore`, { newVolume: { name: 'restored-later' } });
    expect((await server.call('GET', `/v1/jobs/${restore.json.id}`)).json).toMatchObject({ state: 'running', queued: true, queuePosition: 1, progress: { bytesDone: 0 } });
    await server.call('DELETE', `/v1/jobs/${first.id}`);
    expect(await settle(server, restore.json.id)).toMatchObject({ state: 'succeeded', result: { volume: { name: 'restored-later' } } });
    await stop();
  }, 120_000);

  it('shutdown cancels waiting backups with the running one: their records end error (CANCELLED), the volumes available, exit 0', async () => {
    const { server, first } = await serveOneRunning();
    const waiting = await backup(server, 'b');
    expect((await server.call('GET', `/v1/jobs/${waiting.id}`)).json).toMatchObject({ queued: true, queuePosition: 1 });
    // Its volume is in no flow yet: another backup of it is accepted, and queued behind it (for the volume).
    const behind = await backup(server, 'b');
    expect((await server.call('GET', `/v1/backups/${behind.id}`)).json).toMatchObject({ status: 'creating' });
    await stop();
    for (const id of [first.id, waiting.id, behind.id]) {
      expect(await cairnJson(['backup', 'show', id], { cwd }), id).toMatchObject({ status: 'error', failReason: expect.stringMatching(/^CANCELLED/) });
    }
    for (const name of ['a', 'b']) expect(await cairnJson(['volume', 'show', name], { cwd }), name).toMatchObject({ status: 'available' });
  }, 120_000);

  it('a server killed while a backup waits leaves its record creating and its volume available; the next start recovers it, and the volume backs up again', async () => {
    const { server: killed } = await serveOneRunning();
    const waiting = await backup(killed, 'b');
    expect((await killed.call('GET', `/v1/jobs/${waiting.id}`)).json).toMatchObject({ queued: true });
    killed.child.kill('SIGKILL');
    await killed.exit;
    server = undefined;
    // As the server left them (`backup show` and `volume show` do not recover): nothing blocks the volume.
    expect(await cairnJson(['backup', 'show', waiting.id], { cwd })).toMatchObject({ status: 'creating' });
    expect(await cairnJson(['volume', 'show', 'b'], { cwd })).toMatchObject({ status: 'available' });
    const restarted = await serve(['--max-data-jobs', '1']);
    expect((await restarted.call('GET', `/v1/backups/${waiting.id}`)).json).toMatchObject({ status: 'error' });
    expect((await restarted.call('GET', '/v1/volumes/b')).json).toMatchObject({ status: 'available' });
    const again = await backup(restarted, 'b');
    expect(await settle(restarted, again.id)).toMatchObject({ state: 'succeeded' });
    await stop();
  }, 120_000);

  it('by default four backups run at once and a fifth waits; with 0 none waits', async () => {
    let server = await serve();
    const running = [];
    for (const name of ['a', 'b', 'c', 'd']) running.push(await backup(server, name, true));
    for (const job of running) expect(await viewUntil(server, job.id, holdsPlace)).toMatchObject({ state: 'running' });
    const fifth = await backup(server, 'e');
    expect((await server.call('GET', `/v1/jobs/${fifth.id}`)).json).toMatchObject({ queued: true, queuePosition: 1 });
    await stop();

    server = await serve(['--max-data-jobs', '0']);
    const slow = [];
    for (const name of VOLUMES) slow.push(await backup(server, name, true));
    // Each reads its first unit: all five hold their volume at once.
    for (const job of slow) expect(await viewUntil(server, job.id, (v) => v.progress.bytesDone > 0), job.volumeId).toMatchObject({ state: 'running' });
    for (const job of slow) expect((await server.call('GET', `/v1/jobs/${job.id}`)).json.queued).toBeUndefined();
    await stop();
  }, 120_000);

  it('--max-data-jobs takes a whole number from 0 to 1024 in decimal digits: anything else is a usage error (exit 2), INVALID_INPUT', async () => {
    for (const bad of ['-1', '1025', '1.5', 'two', ' 2', '2 ', '1e2', '0x4', '']) {
      // Killed if it starts serving (a value taken), so the test fails instead of hanging.
      const r = await cairnWithin(15_000, ['serve', '--listen', '127.0.0.1:0', '--json', '--max-data-jobs', bad], cwd);
      expect(r.code, bad).toBe(2);
      expect(jsonError(r).code, bad).toBe('INVALID_INPUT');
    }
    expect((await cairn(['serve', '--help'], { cwd })).stdout).toContain('--max-data-jobs');
  }, 120_000);
});
