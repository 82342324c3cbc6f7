/**
 * docs/api.md, "Shutdown": a route handler still at work when the server stops (one that does
 * its work in the request, not in a job: here `DELETE /v1/backups/:id`) ends before the targets
 * close. The old server waited for the connections only: once the drain timeout cut the
 * handler's connection, `cairn serve` said `stopped` and closed its targets while the handler
 * still waited, and the handler then did its catalog writes after the targets were closed.
 * `stopped` is printed right before the targets close (api-serve.ts), so the test reads the order
 * from it.
 *
 * The handler is held with real components: this test process holds the backup's record section
 * (a `record` lock of the repository, as another Cairn process in RepositoryCatalog.section
 * would), so the delete waits at its first step; the lock attempt the server writes meanwhile
 * (seen through inotify on locks/) shows the handler is under way.
 */
import { watch } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { Repository } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tick, within } from '../../core/test/settle.js';
import { HandlersInFlight } from '../src/api/handlers-in-flight.js';
import { cairn, cairnJson, cairnSpawn, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/** A request on a new connection: its status, or the connection error's code once it fails. */
function send(url: string, method: string, path: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request(new URL(path, url), { method, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.end();
  });
}

describe('cairn serve: SIGTERM while a route handler is at work', () => {
  let cwd: string;
  let backupId: string;
  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 1 * MiB);
    const volumeId: string = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd })).volume.id;
    backupId = (await cairnJson(['backup', 'create', volumeId], { cwd })).id;
  });
  afterAll(() => removeDir(cwd));

  it('waits for the handler to finish its work before it closes the targets, and exits 0', async () => {
    const locks = join(cwd, '.cairn/repository/locks');
    const repo = await Repository.open(await PosixObjectStore.open({ directory: join(cwd, '.cairn/repository') }), { workers: 0 });
    const section = await repo.locks.acquire('record', { backupId, purpose: 'test: another process in the record section', wait: true });
    // Record locks of a backup are named `record-<backup id in hex>-<lock id>` (repository-locks.ts).
    const recordPrefix = `record-${Buffer.from(backupId, 'utf8').toString('hex')}-`;
    expect(section.doc.id.startsWith(recordPrefix)).toBe(true);
    // A drain timeout far shorter than the wait below: the old server cut the connection and
    // closed its targets well within it.
    const { child, exit } = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json', '--recover-interval', '0'], { cwd, env: { CAIRN_SERVE_DRAIN_TIMEOUT_MS: '200' } });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let released = false;
    try {
      while (!stdout.includes('\n')) {
        expect(child.exitCode, stderr).toBeNull();
        await tick(50);
      }
      const url: string = JSON.parse(stdout.slice(0, stdout.indexOf('\n'))).listening;

      // The server's attempt at the section: a record lock of the backup other than the test's.
      const watcher = watch(locks);
      const attempted = new Promise<void>((resolve) =>
        watcher.on('change', (_type, name) => {
          const file = String(name);
          if (file.startsWith(recordPrefix) && !file.startsWith(section.doc.id)) resolve();
        }),
      );
      let answered = false;
      const answer = send(url, 'DELETE', `/v1/backups/${backupId}`).finally(() => (answered = true));
      try {
        await within(attempted, 30_000);
      } finally {
        watcher.close();
      }

      child.kill('SIGTERM');
      const stopped = new Promise<void>((resolve) => {
        const check = () => (stderr.includes('stopped') ? resolve() : setTimeout(check, 50).unref());
        check();
      });
      // A bound, not a timing: the old server closed its targets ~200 ms after the signal (the
      // drain timeout) and said `stopped`; the fixed one waits for the handler, however long.
      await within(Promise.race([stopped, exit]), 5_000).catch(() => undefined);
      expect(stderr).toContain('shutting down');
      expect(stderr, 'stopped while the handler was still waiting for the section').not.toContain('stopped');
      expect(child.exitCode).toBeNull();
      // The handler has not ended: its backup is untouched so far.
      expect(await cairnJson(['backup', 'show', backupId], { cwd })).toMatchObject({ status: 'available' });

      await section.release();
      released = true;
      const r = await within(exit, 60_000);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('stopped');
      expect(r.stderr).not.toMatch(/error/i);
      // The client's connection was cut at the drain timeout; the work was done all the same.
      await within(answer, 10_000);
      expect(answered).toBe(true);
      const show = await cairn(['backup', 'show', backupId, '--json'], { cwd });
      expect(show.code, show.stdout).not.toBe(0);
      expect(JSON.parse(show.stderr.trim().split('\n').at(-1)!).error).toMatchObject({ code: 'NOT_FOUND' });
      expect(await readdir(locks), 'no lock left behind').toEqual([]);
    } finally {
      if (!released) await section.release();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await repo.close();
    }
  }, 120_000);
});

describe('HandlersInFlight', () => {
  it('close waits for the running handlers, then refuses new ones without running them', async () => {
    const handlers = new HandlersInFlight();
    let finish!: () => void;
    const running = handlers.run(() => new Promise<string>((r) => (finish = () => r('done'))));
    let closed = false;
    const closing = handlers.close().then(() => (closed = true));
    await tick();
    expect(closed).toBe(false);
    let ran = false;
    await expect(handlers.run(async () => (ran = true))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(ran).toBe(false);
    finish();
    expect(await running).toBe('done');
    await within(closing, 10_000);
    expect(closed).toBe(true);
  });

  it('a handler that throws counts until it has thrown', async () => {
    const handlers = new HandlersInFlight();
    let fail!: () => void;
    const running = handlers.run(() => new Promise((_, reject) => (fail = () => reject(new Error('boom')))));
    let closed = false;
    const closing = handlers.close().then(() => (closed = true));
    await tick();
    expect(closed).toBe(false);
    fail();
    await expect(running).rejects.toThrow('boom');
    await within(closing, 10_000);
    expect(closed).toBe(true);
  });
});
