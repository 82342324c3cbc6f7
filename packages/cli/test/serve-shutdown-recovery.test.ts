/**
 * docs/api.md, "Shutdown": on SIGTERM the server stops accepting connections at once, even while
 * a periodic recovery run is under way. The run is held long with real components: a backup left
 * `creating` by a SIGKILLed `cairn backup create` is one recovery must resolve, and this test
 * process holds that backup's record section (a `record` lock of the repository, as another
 * Cairn process in RepositoryCatalog.section would), so the server's recovery waits on it.
 */
import { watch } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { Repository } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, cairnSpawn, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

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

/** A GET on a new connection (no pooled keep-alive one): its status, or the connection error's code. */
function getOnNewConnection(url: string, path: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request(new URL(path, url), { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.end();
  });
}

/**
 * Resolves true once a lock object of `backupId`'s record section other than `own` is created in
 * the posix store's `locksDir` (a `record` lock's id begins `record-<backup id as hex>-`), false
 * after `ms`. Watched (inotify), not polled: each try's object lives only for a put, a listing and
 * a delete.
 */
function recordLockTried(locksDir: string, backupId: string, own: string, ms: number): Promise<boolean> {
  const prefix = `record-${Buffer.from(backupId, 'utf8').toString('hex')}-`;
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const watcher = watch(locksDir, (_event, name) => {
      if (name && String(name).startsWith(prefix) && String(name) !== own) done(true);
    });
    function done(seen: boolean): void {
      clearTimeout(timer);
      watcher.close();
      resolve(seen);
    }
    timer = setTimeout(() => done(false), ms);
  });
}

describe('cairn serve: SIGTERM during a periodic recovery run', () => {
  let cwd: string;
  let volumeId: string;
  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 8 * MiB);
    volumeId = (await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd })).volume.id;
  });
  afterAll(() => removeDir(cwd));

  it('stops accepting connections at once, lets the run finish, and exits 0', async () => {
    const server: ServedApi = await serveApi(cwd, ['--recover-interval', '1']);
    const get = async (path: string) => (await fetch(`${server.url}${path}`)).json() as Promise<any>;
    const repo = await Repository.open(await PosixObjectStore.open({ directory: join(cwd, '.cairn/repository') }), { workers: 0 });
    // 8 MiB at 512 KiB/s: about 16 s, so it is still running when killed.
    const backup = cairnSpawn(['backup', 'create', volumeId, '--read-rate', '512KiB', '--json'], { cwd });
    let stderr = '';
    server.child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const seen = await until(() => get('/v1/backups'), (list: any[]) => list.some((b) => b.status === 'creating'));
      const backupId: string = seen.find((b: any) => b.status === 'creating')?.id;
      expect(backupId, 'the backup never showed up creating').toBeDefined();
      const section = await repo.locks.acquire('record', { backupId, purpose: 'test: another process in the record section', wait: true });
      try {
        backup.child.kill('SIGKILL');
        await backup.exit;
        // A recovery run waits on the section: it tries the backup's record lock again and again
        // (RepositoryLocks.acquire: put, check, delete, wait), each try a new lock object.
        expect(await recordLockTried(join(cwd, '.cairn/repository/locks'), backupId, section.doc.id, 30_000), 'no recovery run tried the record section').toBe(true);
        expect(await get(`/v1/backups/${backupId}`)).toMatchObject({ status: 'creating' });
        expect(await getOnNewConnection(server.url, '/v1/backups')).toBe(200);

        server.child.kill('SIGTERM');
        await until(async () => stderr, (s) => s.includes('shutting down'));
        // The run still waits on the section (held until after these checks): the server must
        // stop listening all the same, and not exit before the run ends.
        expect(await until(() => getOnNewConnection(server.url, '/v1/backups'), (v) => v === 'ECONNREFUSED', 20_000)).toBe('ECONNREFUSED');
        expect(server.child.exitCode).toBeNull(); // it waits for the recovery run
      } finally {
        await section.release();
      }
      const r = await server.exit;
      expect(r.code, r.stderr).toBe(0);
      // The run that waited resolved the record before the server exited.
      const list = await cairnJson(['backup', 'list'], { cwd });
      expect(list.find((b: { id: string }) => b.id === backupId)).toMatchObject({ status: 'error' });
    } finally {
      if (backup.child.exitCode === null && backup.child.signalCode === null) backup.child.kill('SIGKILL');
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
      await repo.close();
    }
  }, 90_000);
});
