import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { fuseUsable, hangingFuseEachTest } from '../../../packages/qmp/test/fixtures/hanging-fuse-server.js';
import type { DaemonSession } from '../src/daemon-session.js';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, tempDir } from './helpers.js';
import { leftovers, sessionOf } from './stall.js';

// The driver waits for the event a command triggers (BLOCK_EXPORT_DELETED after block-export-del,
// BLOCK_JOB_CANCELLED after block-job-cancel). qemu's monitor runs one command at a time: when a
// slow command is ahead of the trigger, the trigger waits its turn (its own timeout counts from
// that turn), and the event comes only after it ran. The wait used to count from its creation, so
// it timed out on a healthy daemon that was working through the queue; it now counts from the
// trigger's reply. The slow command is real: a `blockdev-add` of a file on a FUSE file system
// that does not answer (packages/qmp/test/fixtures/hanging-fuse.mjs) holds the daemon until the
// server goes. Needs root and /dev/fuse.
const fuse = hangingFuseEachTest(fuseUsable && missingQemu.length === 0, () => tempDir());
const TIMEOUT = 1000;

/**
 * Sends the slow `blockdev-add` on the FUSE mount just before the session's first `command`, so
 * that command waits its turn behind it. Returns the slow call (once sent) and an undo.
 */
function holdBefore(session: DaemonSession, command: string): { opening: () => Promise<unknown> | undefined; undo: () => void } {
  const qmp = session.qmp;
  const execute = qmp.execute.bind(qmp) as (c: string, ...rest: unknown[]) => Promise<unknown>;
  let opening: Promise<unknown> | undefined;
  (qmp as unknown as { execute: typeof execute }).execute = (c, ...rest) => {
    if (c === command && !opening) {
      opening = execute('blockdev-add', { driver: 'file', 'node-name': 'hang', filename: join(fuse.mountPoint, 'img') }, { timeoutMs: 60_000 });
      opening.catch(() => undefined); // awaited by the test; handled should it fail first
    }
    return execute(c, ...rest);
  };
  return { opening: () => opening, undo: () => delete (qmp as unknown as { execute?: unknown }).execute };
}

/** Holds the daemon behind the slow command well past TIMEOUT, then lets it go; `call` must succeed. */
async function heldCall(session: DaemonSession, command: string, call: () => Promise<unknown>): Promise<void> {
  const hold = holdBefore(session, command);
  try {
    const result = call();
    result.catch(() => undefined); // awaited below
    await fuse.printed('hung img');
    await sleep(TIMEOUT * 3); // the trigger's reply and event come well past TIMEOUT from its sending
    fuse.kill(); // the lookup fails: the slow command is answered (an error), then the trigger in its turn
    await expect(hold.opening()).rejects.toMatchObject({ message: expect.stringMatching(/blockdev-add: Could not open .*connection abort/) });
    await result;
  } finally {
    hold.undo();
  }
}

describe.skipIf(!fuseUsable || missingQemu.length > 0)('event waits count from the reply of the command that triggers the event (a real daemon held by a slow command)', () => {
  it('detach: block-export-del queued behind a slow command; the wait for BLOCK_EXPORT_DELETED holds, the daemon is kept', async () => {
    const d = new Qcow2VolumeDriver({ directory: join(fuse.dir, 'volumes'), commandTimeoutMs: TIMEOUT });
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
      const session = await sessionOf(d);
      await heldCall(session, 'block-export-del', () => d.detach(a.id));
      expect(session.alive).toBe(true); // not taken for stalled and stopped
      expect(await session.qmp.execute('query-block-exports')).toEqual([]);
      expect(await leftovers(session)).toEqual([]);
    } finally {
      await d.close();
    }
  }, 30_000);

  it('deleteSnapshot: block-job-cancel of a view queued behind a slow command; the wait for BLOCK_JOB_CANCELLED holds and the view is gone', async () => {
    const d = new Qcow2VolumeDriver({ directory: join(fuse.dir, 'volumes'), commandTimeoutMs: TIMEOUT });
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
      const snap = await d.createSnapshot(v.id);
      const session = await sessionOf(d);
      await heldCall(session, 'block-job-cancel', () => d.deleteSnapshot(snap.id));
      expect(session.alive).toBe(true);
      expect(await session.qmp.execute('query-block-jobs')).toEqual([]);
      expect(session.deferred.pending()).toEqual([]); // nothing of the view was left to retry
      expect(await leftovers(session)).toEqual([`export ${(await session.qmp.execute('query-block-exports'))[0]!.id}`]); // the attachment's only
      await d.detach(a.id);
    } finally {
      await d.close();
    }
  }, 30_000);
});
