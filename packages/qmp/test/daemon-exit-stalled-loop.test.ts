/**
 * When this process's event loop is held up (synchronous work, or the process not scheduled on a
 * loaded machine) past a wait for the daemon's exit while the daemon exits, node runs the expired
 * timer before it reads the exit: a plain timer then took the daemon for one still running and
 * sent SIGTERM (stop) to a process that had exited, or gave up on it as left behind (kill). The
 * stall is made by blocking the loop until the daemon (a real qemu-storage-daemon) is a zombie
 * that node has not reaped yet, with the wait's deadline passed.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { QemuStorageDaemon } from '../src/index.js';
import { processStateLetter } from '../src/process-state.js';

/** Blocks this thread (and so the event loop) for `ms`. */
const stallLoop = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Blocks the loop until `pid` is a zombie (exited, not reaped: node has not seen its exit), then `ms` more. */
function stallUntilZombie(pid: number, ms: number): void {
  while (processStateLetter(pid) !== 'Z') stallLoop(1);
  stallLoop(ms);
}

/** The daemon's child process: its `killed` says whether this process sent it a signal (the real handle, only read). */
const childOf = (d: QemuStorageDaemon): ChildProcess => (d as unknown as { child: ChildProcess }).child;

describe('QemuStorageDaemon after its event loop stalled past an exit wait', () => {
  it('stop: a daemon that exited before its wait ran out is sent no SIGTERM', async () => {
    const d = await QemuStorageDaemon.start();
    try {
      await d.qmp.close(); // without QMP, stop waits 0 ms for the exit before its SIGTERM
      process.kill(d.pid, 'SIGKILL');
      // stop() starts its wait now; the loop resumes only once the daemon is dead and the wait's time is up.
      const stopping = d.stop();
      stallUntilZombie(d.pid, 20);
      await expect(stopping).resolves.toEqual({ code: null, signal: 'SIGKILL' });
      expect(childOf(d).killed, 'a signal was sent to the exited daemon').toBe(false);
      expect(existsSync(d.dir)).toBe(false);
    } finally {
      await d.kill().catch(() => undefined);
    }
  });

  it('kill: a daemon that exited before the wait after its SIGKILL ran out is not left behind', async () => {
    const d = await QemuStorageDaemon.start();
    try {
      const killing = d.kill('SIGKILL', { killTimeoutMs: 0 });
      // Microtasks only (no I/O is read): the wait's 0 ms timer starts, then the loop is held until the daemon is dead.
      for (let i = 0; i < 50; i++) await null;
      stallUntilZombie(d.pid, 20);
      await expect(killing).resolves.toEqual({ code: null, signal: 'SIGKILL' });
      expect(existsSync(d.dir)).toBe(false);
    } finally {
      await d.kill().catch(() => undefined);
    }
  });
});
