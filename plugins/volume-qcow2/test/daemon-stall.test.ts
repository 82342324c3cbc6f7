import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, pattern, tempDir } from './helpers.js';
import { SETTLED_MS } from './refusals.js';
import { boundSessionsBy, GENEROUS_MS, sessionOf, setSessionTimeout } from './stall.js';

// A daemon that stops answering (SIGSTOP here; a hung disk or NFS server in real life) must not
// hang device I/O, detach or close for ever: NBD requests are bounded by the I/O timeout (10
// command timeouts), the NBD disconnect like QMP commands, and a detach that gets no answer stops
// the daemon (quit, SIGTERM, SIGKILL). The daemon is set up with a generous bound on everything
// (boundSessionsBy), then bound by TIMEOUT (setSessionTimeout) just before it is stopped.
const TIMEOUT = 400;
boundSessionsBy();
const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** 'resolved' or 'rejected <code>'. */
const outcome = (promise: Promise<unknown>): Promise<string> =>
  promise.then(
    () => 'resolved',
    (e: { code?: string }) => `rejected ${e.code}`,
  );

/** `promise`'s outcome, or 'pending' after `ms`. */
function settleWithin(promise: Promise<unknown>, ms: number): Promise<string> {
  return Promise.race([outcome(promise), new Promise<string>((r) => setTimeout(() => r('pending'), ms))]);
}

const gone = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
};

describe.skipIf(missingQemu.length > 0)(`a stalled daemon (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('detach of a rw attachment fails with UNAVAILABLE in bounded time and stops the daemon; pending I/O fails; close() returns; the driver starts a new daemon', async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const d = new Qcow2VolumeDriver({ directory: dir, commandTimeoutMs: TIMEOUT });
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(4096, 1));
    const pid = (await d.daemonPid())!;
    setSessionTimeout(await sessionOf(d), TIMEOUT, [a]);
    process.kill(pid, 'SIGSTOP');
    try {
      const read = outcome(a.device.read(0, 512)); // fails after the I/O timeout
      const started = Date.now();
      // The read and the flush get 10 command timeouts (a slow flush is not a stall), then the daemon is stopped.
      expect(await settleWithin(d.detach(a.id), SETTLED_MS)).toBe('rejected UNAVAILABLE');
      expect(Date.now() - started).toBeGreaterThanOrEqual(10 * TIMEOUT);
      expect(gone(pid)).toBe(true);
      expect(await read).toBe('rejected UNAVAILABLE');
      expect(await settleWithin(d.detach(a.id), SETTLED_MS)).toBe('resolved'); // idempotent

      const again = await d.attach({ kind: 'volume', id: v.id }, 'ro'); // a new daemon
      expect(await d.daemonPid()).not.toBe(pid);
      await d.detach(again.id);
      expect(await settleWithin(d.close(), SETTLED_MS)).toBe('resolved');
    } finally {
      if (!gone(pid)) process.kill(pid, 'SIGKILL');
      await settleWithin(d.close(), 10 * TIMEOUT);
    }
  });

  it('device reads and writes on a stalled daemon fail with UNAVAILABLE within the I/O timeout; once it answers again, detach removes the export and closes the node, and the volume attaches again', async () => {
    const T = 200;
    const dir = await tempDir();
    dirs.push(dir);
    const d = new Qcow2VolumeDriver({ directory: dir, commandTimeoutMs: T });
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(4096, 1));
    const session = await sessionOf(d);
    const pid = session.daemon.pid;
    setSessionTimeout(session, T, [a]);
    process.kill(pid, 'SIGSTOP');
    let resumed = false;
    try {
      const started = Date.now();
      const read = settleWithin(a.device.read(0, 512), SETTLED_MS);
      const write = settleWithin(a.device.write(MiB, pattern(4096, 2)), SETTLED_MS);
      expect(await read).toBe('rejected UNAVAILABLE');
      expect(await write).toBe('rejected UNAVAILABLE');
      expect(Date.now() - started).toBeGreaterThanOrEqual(9 * T);
      await expect(a.device.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' }); // the connection is gone
      process.kill(pid, 'SIGCONT');
      resumed = true;
      setSessionTimeout(session, GENEROUS_MS); // what follows is the real daemon's work

      // The attachment stays (its volume in use) until detach, which skips the lost connection.
      expect((await d.getVolume(v.id)).status).toBe('in-use');
      expect(await settleWithin(d.detach(a.id), SETTLED_MS)).toBe('resolved');
      expect(await session.qmp.execute('query-block-exports')).toEqual([]);
      expect(session.nodeOf(`${dir}/volumes/${v.id}.qcow2`)).toBeUndefined();
      const again = await d.attach({ kind: 'volume', id: v.id }, 'rw'); // same daemon, not stopped
      expect(session.alive).toBe(true);
      expect(await again.device.read(0, 4096)).toEqual(pattern(4096, 1));
      await d.detach(again.id);
    } finally {
      if (!resumed) process.kill(pid, 'SIGCONT');
      await settleWithin(d.close(), 10 * T);
    }
  });

  it('close() with a stalled daemon and a read-only attachment returns in bounded time', async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const d = new Qcow2VolumeDriver({ directory: dir, commandTimeoutMs: TIMEOUT });
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const pid = (await d.daemonPid())!;
    setSessionTimeout(await sessionOf(d), TIMEOUT, [a]);
    process.kill(pid, 'SIGSTOP');
    try {
      const read = outcome(a.device.read(0, 512)); // pending until the daemon is gone (well before the I/O timeout)
      expect(await settleWithin(d.close(), SETTLED_MS)).toBe('resolved');
      expect(gone(pid)).toBe(true);
      expect(await read).toBe('rejected UNAVAILABLE'); // the daemon is gone: this settles at once
    } finally {
      if (!gone(pid)) process.kill(pid, 'SIGKILL');
    }
  });
});
