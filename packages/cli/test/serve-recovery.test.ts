import { execFileSync } from 'node:child_process';
import { constants, openSync, writeSync, closeSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairnJson, cairnSpawn, cairnWithin, MiB, removeDir, serveApi, tempDir, writeRawImage, type ServedApi } from './helpers.js';

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
    server = await serveApi(cwd, ['--recover-interval', '1']);
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
      await sleep(2500); // two recovery runs while the process is alive
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

  it("the server's own backup and restore jobs run across recovery runs and end as usual", async () => {
    const post = async (path: string, body: unknown) => (await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json() as Promise<any>;
    const settle = (id: string) => until(() => get(`/v1/jobs/${id}?wait=2`), (j) => j.state !== 'running', 60_000);
    // 8 MiB at 2 MiB/s: about 4 s, four recovery runs.
    const backup = await settle((await post('/v1/backups', { volumeId, readRate: 2 * MiB })).id);
    expect(backup).toMatchObject({ state: 'succeeded', result: { status: 'available' } });
    const restore = await settle((await post(`/v1/backups/${backup.result.id}/restore`, { newVolume: {} })).id);
    expect(restore).toMatchObject({ state: 'succeeded', result: { backup: { status: 'available' }, volume: { status: 'available' } } });
  });

  it('--recover-interval takes 0 or seconds from 1 to 86400: anything else, a sub-second interval included, is a usage error (exit 2)', async () => {
    for (const bad of ['soon', '-1', '86401', '0.001', '0.5', '1e3']) {
      // Killed if it starts serving (a value taken), so the test fails instead of hanging.
      expect((await cairnWithin(15_000, ['serve', '--listen', '127.0.0.1:0', '--recover-interval', bad], cwd)).code, bad).toBe(2);
    }
  });
});

/** docs/api.md, "Shutdown": SIGTERM while the server starts (opening its targets, recovering) stops it cleanly, as once it serves. */
describe('cairn serve: SIGTERM during start-up', () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = await tempDir();
    await writeFile(join(cwd, 'pw'), 'a passphrase long enough\n');
    await writeFile(
      join(cwd, 'cairn.config.json'),
      JSON.stringify({
        volumeDrivers: { file: { plugin: 'file', options: { directory: 'volumes' } } },
        targets: { posix: { plugin: 'posix', options: { directory: 'repository', repository: { init: true, passphrase: 'file:pw' } } } },
      }),
    );
    await writeRawImage(join(cwd, 'v.raw'), 4 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v'], { cwd });
    await cairnJson(['backup', 'create', 'v'], { cwd });
  });
  afterAll(() => removeDir(cwd));

  it('a SIGTERM while the targets open ends start-up: exit 0, never listening, no lock left, the repository usable', async () => {
    // The passphrase comes through a FIFO: start-up waits in it until the test writes.
    const pw = join(cwd, 'pw');
    await rm(pw);
    execFileSync('mkfifo', [pw]);
    const { child, exit } = cairnSpawn(['serve', '--listen', '127.0.0.1:0', '--json'], { cwd });
    let writer: number | undefined;
    try {
      // A non-blocking open for writing succeeds once the server has the FIFO open for reading.
      for (let i = 0; i < 1000 && writer === undefined; i++) {
        try {
          writer = openSync(pw, constants.O_WRONLY | constants.O_NONBLOCK);
        } catch {
          await sleep(10);
        }
      }
      expect(writer, 'the server never read its passphrase').toBeDefined();
      child.kill('SIGTERM');
      await sleep(200);
      try {
        writeSync(writer!, 'a passphrase long enough\n');
      } catch {
        /* EPIPE: the server is gone (killed by the signal); its exit says so below */
      }
      closeSync(writer!);
      writer = undefined;
      const r = await exit;
      expect(child.signalCode, r.stderr).toBeNull(); // not killed by the signal: it handled it
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(''); // no address line: it never listened
    } finally {
      if (writer !== undefined) closeSync(writer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await rm(pw, { force: true });
      await writeFile(pw, 'a passphrase long enough\n');
    }
    expect(await cairnJson(['repo', 'locks'], { cwd })).toEqual([]);
    expect((await cairnJson(['backup', 'list'], { cwd })).map((b: { status: string }) => b.status)).toEqual(['available']);
  }, 60_000);
});
