import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fuseUsable, hangingFuseEachTest } from '../../../packages/qmp/test/fixtures/hanging-fuse-server.js';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, tempDir } from './helpers.js';
import { sessionOf } from './stall.js';

// A daemon that SIGKILL cannot end: stuck in uninterruptible I/O (a hung disk, NFS or FUSE server)
// it lives on, with the image open and locked, until that I/O ends. The driver must not report
// the volume released meanwhile: detach fails UNAVAILABLE left behind (also the detach of another
// attachment of that daemon), a new daemon is kept off the image by qemu's lock (BUSY), and
// close() reports the stuck daemon instead of resolving. Made for real with the FUSE server of
// packages/qmp (a lookup it never answers puts the daemon's main thread in state D, until the
// server exits). Needs root and /dev/fuse.
const fuse = hangingFuseEachTest(fuseUsable && missingQemu.length === 0, () => tempDir());
const TIMEOUT = 500;

/** The error `promise` (the call `what`) rejects with; fails the test should it resolve. */
async function rejection(what: string, promise: Promise<unknown>): Promise<Error & { code?: string; details?: Record<string, unknown>; cause?: unknown }> {
  return promise.then(
    () => expect.fail(`${what} resolved, expected a rejection`),
    (e: Error) => e,
  );
}

describe.skipIf(!fuseUsable || missingQemu.length > 0)('a daemon that SIGKILL cannot end (uninterruptible I/O on a hung FUSE server)', () => {
  it('detach fails UNAVAILABLE left behind with its own failure as cause; the image stays locked (attach BUSY); close() reports the daemon until it exits', async () => {
    const d = new Qcow2VolumeDriver({ directory: join(fuse.dir, 'volumes'), commandTimeoutMs: TIMEOUT });
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const b = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const session = await sessionOf(d);
    const pid = session.daemon.pid;
    // The daemon's main loop opens a file on the hung file system: it sleeps in state D. Bounded
    // like the driver's own commands: the commands queued behind it get their turn (and their
    // timeout starts) only when it has timed out.
    const opening = session.qmp.execute('blockdev-add', { driver: 'file', 'node-name': 'hang', filename: join(fuse.mountPoint, 'img') }, { timeoutMs: TIMEOUT });
    opening.catch(() => undefined);
    await fuse.printed('hung img');

    const err = await rejection('detach(a)', d.detach(a.id));
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toMatch(/^\[qcow2\] detach \S+: qemu-storage-daemon stopped answering and could not be stopped \(daemon process \d+ did not exit .*left behind.*\); until it exits it keeps the image open and locked/);
    expect(err.details).toMatchObject({ leftBehind: true, pid, processState: 'in uninterruptible sleep (D)' });
    expect(err.cause).toMatchObject({ code: 'UNAVAILABLE', details: { timeoutMs: TIMEOUT } }); // detach's own failure: no answer in time
    // The other attachment of that daemon is not released either.
    const errB = await rejection('detach(b)', d.detach(b.id));
    expect(errB).toMatchObject({ code: 'UNAVAILABLE', details: { leftBehind: true, pid } });

    // A new daemon starts, and qemu's lock keeps it off the image the stuck one holds.
    await expect(d.attach({ kind: 'volume', id: v.id }, 'ro')).rejects.toMatchObject({ code: 'BUSY' });
    const second = await d.daemonPid();
    expect(second).toBeDefined();
    expect(second).not.toBe(pid);
    // close() stops the new daemon and reports the stuck one: it does not resolve as if all were stopped.
    const closeErr = await rejection('close()', d.close());
    expect(closeErr).toMatchObject({ code: 'UNAVAILABLE', details: { leftBehind: true, pid } });

    // The I/O ends (the file system's server goes): the SIGKILL takes effect, close() succeeds and the image is free.
    fuse.kill();
    await session.daemon.whenExited;
    await d.close();
    const other = new Qcow2VolumeDriver({ directory: join(fuse.dir, 'volumes') });
    try {
      const again = await other.attach({ kind: 'volume', id: v.id }, 'ro');
      await other.detach(again.id);
    } finally {
      await other.close();
    }
  }, 60_000);
});
