import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { NbdClient } from '@cairn/nbd';
import { afterEach, describe, expect, it } from 'vitest';
import type { Qcow2VolumeDriver } from '../src/index.js';
import { disposeDriver, freshDriver, MiB, missingQemu } from './helpers.js';
import { sessionOf } from './stall.js';

// When this process's event loop stalls (synchronous work, or the process not scheduled on a
// loaded machine) past a deadline while the daemon's answer is already in the socket, node runs
// the expired timer before it reads the socket: a plain setTimeout deadline failed an NBD step
// (detach's flush and disconnect, DaemonSession.within) that the real daemon had answered in time,
// and took a daemon that had exited for one still running (exitedWithin). The stall is a
// synchronous wait, made once the request is written (the microtasks that write it have run), and
// held until what the deadline must not hide has happened (the reply is in the socket, the daemon
// has exited): its absence would be a failure of the test, not of the code.
const TIMEOUT = 100;
/** A bound for a stall that waits for the daemon: far past anything a loaded machine takes. */
const WAIT_MS = 20_000;
/** The stall that stands in for seeing the reply in the socket where `ss` is missing. */
const REPLY_MS = 2_000;
/** Blocks this thread (and so the event loop) for `ms`. */
const stallLoop = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
/**
 * Blocks this thread for at least `ms`, and then until `done()` (checked synchronously, every 10
 * ms, for at most WAIT_MS). Whether `done()` held.
 */
function stallUntil(ms: number, done: () => boolean): boolean {
  stallLoop(ms);
  for (const end = Date.now() + WAIT_MS; !done(); stallLoop(10)) if (Date.now() > end) return false;
  return true;
}
/** Resolves once the microtasks queued so far (and those they queue) have run, before any I/O is read. */
const afterMicrotasks = (): Promise<void> => new Promise((resolve) => process.nextTick(resolve));

/**
 * Bytes the kernel holds for this process to read on `socket` (a connected unix socket), from
 * `ss`; undefined when `ss` cannot tell (not installed, or no such socket listed).
 */
function unreadBytes(socket: Socket): number | undefined {
  try {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1];
    // Netid State Recv-Q Send-Q Local-Address Local-Inode Peer-Address Peer-Inode (a client's local address is `*`).
    const line = execFileSync('ss', ['-xnH'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .find((f) => f[5] === inode);
    return line ? Number(line[2]) : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the process `pid` has exited (a zombie, or gone). */
function exited(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

const drivers: Qcow2VolumeDriver[] = [];
afterEach(async () => {
  for (const d of drivers.splice(0)) await disposeDriver(d).catch(() => {});
});

describe.skipIf(missingQemu.length > 0)(`qcow2 deadlines after the event loop stalled (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('an NBD step answered before the stall ended resolves within(); it does not time out', async () => {
    const d = await freshDriver();
    drivers.push(d);
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    const session = await sessionOf(d);
    const client = (a.device as unknown as { client: NbdClient }).client;
    const socket = (client as unknown as { conn: { socket: Socket } }).conn.socket;
    const seen = unreadBytes(socket) === 0; // else `ss` cannot tell: a stall of REPLY_MS stands in for seeing the reply
    const read = session.within('read', client.read(0, 512), TIMEOUT);
    await afterMicrotasks(); // the request is on the socket
    // The deadline passes while the daemon's reply (one write by qemu) waits in the socket.
    if (seen) expect(stallUntil(TIMEOUT * 4, () => (unreadBytes(socket) ?? 0) > 0), 'the reply reached the socket').toBe(true);
    else stallLoop(REPLY_MS);
    await expect(read).resolves.toHaveLength(512);
    await d.detach(a.id);
  });

  it('exitedWithin is true for a daemon whose exit was received before the stall ended', async () => {
    const d = await freshDriver();
    drivers.push(d);
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const session = await sessionOf(d);
    session.daemon.signal('SIGKILL');
    const within = session.exitedWithin(TIMEOUT);
    expect(stallUntil(TIMEOUT * 4, () => exited(session.daemon.pid)), 'the daemon exits meanwhile').toBe(true);
    expect(await within).toBe(true);
    await d.detach(a.id); // the daemon died: detach succeeds
  });
});
