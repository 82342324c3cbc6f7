import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processAlive } from '../src/runtime-dirs.js';
import { createQcow2, imageBitmaps, removeDir, tempDir, exitsWithin } from './helpers.js';

// A caller that exits normally without stopping its daemon: the exit hook must end the daemon
// with a clean quit (persistent bitmaps written, so the qcow2 driver's checkpoints survive), and a
// daemon that does not quit on SIGTERM must still not outlive the caller.
const run = promisify(execFile);
const fixture = fileURLToPath(new URL('./fixtures/exit-leaving-daemon.mjs', import.meta.url));
let dir: string;

beforeAll(async () => {
  dir = await tempDir();
});

afterAll(async () => {
  await removeDir(dir);
});

/** Runs the fixture to its normal exit and returns the daemon's pid. */
async function callerExits(image: string, mode = ''): Promise<number> {
  const { stdout } = await run(process.execPath, [fixture, image, mode], { timeout: 20_000 });
  return (JSON.parse(stdout) as { pid: number }).pid;
}

describe('a caller that exits normally without stopping its daemon', () => {
  it('the daemon quits cleanly: its persistent bitmap is in the image without the in-use flag, and no daemon is left', async () => {
    const image = await createQcow2(dir, 'clean.qcow2', 1024 * 1024);
    const pid = await callerExits(image);
    try {
      expect(await exitsWithin(pid, 5_000), `daemon ${pid} outlived its caller`).toBe(true);
      const bitmaps = await imageBitmaps(image);
      expect(bitmaps.map((b) => b.name)).toEqual(['b0']);
      expect(bitmaps[0].flags).not.toContain('in-use');
      await run('qemu-img', ['check', image]); // exit status 0: no leaks, nothing inconsistent
    } finally {
      if (processAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  it('a daemon that does not act on SIGTERM (frozen with SIGSTOP) is still killed: no daemon is left', async () => {
    const image = await createQcow2(dir, 'frozen.qcow2', 1024 * 1024);
    const pid = await callerExits(image, 'stopped');
    try {
      expect(await exitsWithin(pid, 5_000), `daemon ${pid} outlived its caller`).toBe(true);
      await run('qemu-img', ['info', image]); // fails with "Failed to get shared write lock" while it is held
    } finally {
      if (processAlive(pid)) {
        process.kill(pid, 'SIGKILL');
      }
    }
  });
});
