import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { processAlive } from '../src/runtime-dirs.js';
import { createQcow2, removeDir, tempDir, exitsWithin } from './helpers.js';

// A caller that dies without cleaning up (SIGKILL, OOM, SIGTERM without handler) must not leave
// its daemon running with the image's write lock, nor its temp dir behind for ever.
const run = promisify(execFile);
const fixture = fileURLToPath(new URL('./fixtures/hold-daemon.mjs', import.meta.url));
let dir: string;

beforeAll(async () => {
  dir = await tempDir();
});

afterAll(async () => {
  await removeDir(dir);
});

describe('the daemon does not outlive its caller (Linux: setpriv --pdeathsig)', () => {
  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    it(`caller killed with ${signal}: the daemon exits and frees the image, and the next start removes the caller's temp dir`, async () => {
      const parent = join(dir, signal);
      await mkdir(parent);
      const image = await createQcow2(dir, `${signal}.qcow2`, 1024 * 1024);
      const caller = spawn(process.execPath, [fixture, parent, image], { stdio: ['ignore', 'pipe', 'inherit'] });
      const line = await new Promise<string>((resolve, reject) => {
        caller.stdout.once('data', (b: Buffer) => resolve(String(b)));
        caller.once('exit', (code) => reject(new Error(`caller exited early (${code})`)));
      });
      const { pid, dir: daemonDir } = JSON.parse(line) as { pid: number; dir: string };
      try {
        caller.kill(signal);
        expect(await exitsWithin(pid, 5_000), `daemon ${pid} still runs after its caller died`).toBe(true);
        await run('qemu-img', ['info', image]); // fails with "Failed to get shared write lock" while an orphan holds it
        expect(existsSync(daemonDir)).toBe(true);
        const next = await QemuStorageDaemon.start({ tmpParent: parent });
        expect(existsSync(daemonDir)).toBe(false);
        await next.stop();
      } finally {
        if (processAlive(pid)) process.kill(pid, 'SIGKILL');
        caller.kill('SIGKILL');
      }
    });
  }

  it('a temp dir kept with keepDir outlives its caller: the next start does not remove it', async () => {
    const parent = join(dir, 'kept');
    await mkdir(parent);
    const kept = await QemuStorageDaemon.start({ tmpParent: parent, keepDir: true });
    await kept.stop();
    // As if a caller that exited had kept it: its owner file names a pid that is gone.
    const ownerFile = join(kept.dir, 'owner');
    const owner = JSON.parse(await readFile(ownerFile, 'utf8')) as { pid: number };
    await writeFile(ownerFile, JSON.stringify({ ...owner, pid: spawnSync('true').pid }));
    const next = await QemuStorageDaemon.start({ tmpParent: parent });
    await next.stop();
    expect(existsSync(join(kept.dir, 'daemon.log')), 'the kept dir was removed as stale').toBe(true);
  });

  it('start() keeps temp dirs of live owners and dirs without an owner file', async () => {
    const parent = join(dir, 'keep');
    await mkdir(join(parent, 'cairn-qsd-live'), { recursive: true });
    await writeFile(join(parent, 'cairn-qsd-live', 'owner'), JSON.stringify({ pid: process.ppid }));
    await mkdir(join(parent, 'cairn-qsd-unknown'));
    const d = await QemuStorageDaemon.start({ tmpParent: parent });
    expect(existsSync(join(parent, 'cairn-qsd-live'))).toBe(true);
    expect(existsSync(join(parent, 'cairn-qsd-unknown'))).toBe(true);
    await d.stop();
  });
});
