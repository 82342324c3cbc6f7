import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { processAlive } from '../src/runtime-dirs.js';
import { fuseUsable, hangingFuseEachTest } from './fixtures/hanging-fuse-server.js';
import { expectCode, tempDir } from './helpers.js';

// A daemon stuck in uninterruptible I/O survives SIGKILL until that I/O ends. Made for real here:
// a FUSE file system (fixtures/hanging-fuse.mjs) that reads a lookup and never answers it, so the
// daemon opening a file there sleeps in state D, and SIGKILL takes effect only once the file
// system's server exits (which aborts the connection). Needs root and /dev/fuse.
const fuse = hangingFuseEachTest(fuseUsable, tempDir);

describe.skipIf(!fuseUsable)('a daemon that SIGKILL cannot end (uninterruptible I/O on a hung FUSE server)', () => {
  it('stop() gives up killTimeoutMs after its SIGKILL: UNAVAILABLE left behind, naming pid and state; a later stop() gets the exit', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: fuse.dir });
    const opening = daemon.qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'f0', filename: join(fuse.mountPoint, 'img') }, { timeoutMs: 60_000 });
    opening.catch(() => undefined); // awaited below; handled should the test fail first
    await fuse.printed('hung img');
    const err = await expectCode(daemon.stop({ quitTimeoutMs: 200, termTimeoutMs: 200, killTimeoutMs: 1_000 }), 'UNAVAILABLE');
    expect((err as unknown as Error).message).toMatch(/did not exit within 1000 ms of SIGKILL.*left behind/);
    expect(err.details).toMatchObject({ pid: daemon.pid, leftBehind: true, processState: 'in uninterruptible sleep (D)' });
    expect(processAlive(daemon.pid)).toBe(true);
    await expectCode(opening, 'UNAVAILABLE'); // the client is closed: the call does not wait out its timeout
    // The I/O ends (the file system's server goes): the SIGKILL takes effect, and stop() reports it.
    fuse.kill();
    expect(await daemon.stop({ killTimeoutMs: 30_000 })).toEqual({ code: null, signal: 'SIGKILL' });
    expect(existsSync(daemon.dir)).toBe(false);
  }, 30_000);

  it('kill() gives up killTimeoutMs after its SIGKILL the same way', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: fuse.dir });
    const opening = daemon.qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'f0', filename: join(fuse.mountPoint, 'img') }, { timeoutMs: 60_000 });
    opening.catch(() => undefined); // awaited below; handled should the test fail first
    await fuse.printed('hung img');
    const err = await expectCode(daemon.kill('SIGKILL', { killTimeoutMs: 500 }), 'UNAVAILABLE');
    expect(err.details).toMatchObject({ pid: daemon.pid, leftBehind: true });
    await opening.catch(() => undefined);
    fuse.kill();
    expect(await daemon.kill('SIGKILL', { killTimeoutMs: 30_000 })).toEqual({ code: null, signal: 'SIGKILL' });
  }, 30_000);

  it('a start whose daemon hangs before QMP comes up gives up after its SIGKILL: UNAVAILABLE left behind, no temp dir', async () => {
    const parent = join(fuse.dir, 'start');
    await mkdir(parent);
    const args = ['--blockdev', `driver=file,node-name=f0,filename=${join(fuse.mountPoint, 'img')}`];
    const err = await expectCode(QemuStorageDaemon.start({ tmpParent: parent, args, startTimeoutMs: 500 }), 'UNAVAILABLE');
    expect((err as unknown as Error).message).toMatch(/no QMP on .* within 500 ms.*did not exit within \d+ ms of SIGKILL/);
    expect(err.details).toMatchObject({ leftBehind: true, processState: 'in uninterruptible sleep (D)' });
    expect(processAlive(err.details!.pid as number)).toBe(true);
    expect(fuse.lines).toContain('hung img');
    expect(await readdir(parent)).toEqual([]);
  }, 30_000);

  it('killTimeoutMs is checked: NaN is INVALID_INPUT before anything is sent', async () => {
    const daemon = await QemuStorageDaemon.start({ tmpParent: fuse.dir });
    await expectCode(daemon.stop({ killTimeoutMs: Number.NaN }), 'INVALID_INPUT');
    await expectCode(daemon.kill('SIGKILL', { killTimeoutMs: -1 }), 'INVALID_INPUT');
    expect(processAlive(daemon.pid)).toBe(true);
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
  }, 30_000);
});

describe.skipIf(!fuseUsable)('a caller whose daemon was left behind', () => {
  it('can exit: the stuck process does not keep its event loop alive (a CLI run ended only when the I/O did)', async () => {
    const fixture = fileURLToPath(new URL('./fixtures/stop-left-behind.mjs', import.meta.url));
    const child = spawn(process.execPath, [fixture, fuse.mountPoint, fuse.dir], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += String(b)));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await fuse.printed('hung img');
    child.stdin.end('stop\n');
    // Bounded: a caller that never exits fails the test instead of stalling the suite.
    const bound = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await exited;
    clearTimeout(bound);
    const report = JSON.parse(out.trim()) as { pid: number; code: string; details: Record<string, unknown> };
    expect(report).toMatchObject({ code: 'UNAVAILABLE', details: { leftBehind: true } });
    expect(code).toBe(0); // exited by itself, not killed at the bound
    expect(processAlive(report.pid)).toBe(true); // still stuck: the caller did not wait for it
  }, 30_000);
});
