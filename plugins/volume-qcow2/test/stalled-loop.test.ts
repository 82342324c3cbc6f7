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
// synchronous wait, made once the request is written (the microtasks that write it have run).
const TIMEOUT = 100;
/** Blocks this thread (and so the event loop) for `ms`. */
const stallLoop = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
/** Resolves once the microtasks queued so far (and those they queue) have run, before any I/O is read. */
const afterMicrotasks = (): Promise<void> => new Promise((resolve) => process.nextTick(resolve));

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
    const read = session.within('read', client.read(0, 512), TIMEOUT);
    await afterMicrotasks(); // the request is on the socket
    stallLoop(TIMEOUT * 4); // the daemon's reply waits in the socket while the deadline passes
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
    const exited = session.exitedWithin(TIMEOUT);
    stallLoop(TIMEOUT * 4); // the daemon exits meanwhile
    expect(await exited).toBe(true);
    await d.detach(a.id); // the daemon died: detach succeeds
  });
});
