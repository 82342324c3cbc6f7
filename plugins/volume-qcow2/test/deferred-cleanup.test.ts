import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import type { DaemonSession } from '../src/daemon-session.js';
import { MiB, missingQemu, overlaysIn, pattern, tempDir } from './helpers.js';
import { addIntruder, becomes, imageOf, qemuNodes, SETTLED_MS, sleep, volumeWithView } from './refusals.js';
import { boundSessionsBy, exportOf, leftovers, runtimeOf, sessionOf, stalledAt } from './stall.js';

// Cleanup that does not finish — the daemon did not answer (SIGSTOP here), or refused a step —
// is kept and retried until it succeeds (DeferredWork): before the volume's next use, which
// reports its error while it still fails, and on a timer without any use. A refusal is made
// here by an export of the view's overlay (or of the volume's node) that Cairn did not make (an
// "intruder", refusals.ts): qemu will not delete a node an export uses (CONFLICT) until that
// export is gone. One driver per case. The command timeout T spaces the retries only: every
// command of the daemon gets a generous bound (boundSessionsBy), and a command stalled on purpose a
// short one (stalledAt).

const T = 250;
boundSessionsBy();
const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function driverIn(dir?: string, commandTimeoutMs = T): Promise<Qcow2VolumeDriver> {
  const directory = dir ?? (await tempDir());
  if (!dir) dirs.push(directory);
  return new Qcow2VolumeDriver({ directory, commandTimeoutMs });
}

/** The volume attaches read-write with nothing else in qemu, takes a write, and its image closes at detach. */
async function expectCleanWriter(d: Qcow2VolumeDriver, session: DaemonSession, volumeId: string): Promise<void> {
  const w = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
  expect(await leftovers(session)).toEqual([`export ${exportOf(w)}`]);
  expect(await overlaysIn(d.directory)).toEqual([]);
  await w.device.write(0, pattern(4096, 1));
  await d.detach(w.id);
  expect(session.nodeOf(imageOf(d, volumeId))).toBeUndefined();
}

describe.skipIf(missingQemu.length > 0)(`cleanup that did not finish is retried until it does (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('deleteSnapshot whose teardown qemu refuses fails with CONFLICT and keeps it: attach reports the refusal until its cause is gone, then attaches read-write on a clean graph', async () => {
    const d = await driverIn();
    try {
      const { volumeId, readerId, snapshotId, session } = await volumeWithView(d);
      await addIntruder(session);
      await expect(d.deleteSnapshot(snapshotId)).rejects.toMatchObject({ code: 'CONFLICT' });
      expect(await d.listSnapshots(volumeId)).toEqual([]);
      await d.detach(readerId);

      await expect(d.attach({ kind: 'volume', id: volumeId }, 'rw')).rejects.toMatchObject({ code: 'CONFLICT' });
      expect(session.nodeOf(imageOf(d, volumeId)), 'the kept teardown holds the image open').toBeDefined();
      await session.deleteExport('intruder');
      await expectCleanWriter(d, session, volumeId);
    } finally {
      await d.close();
    }
  });

  it('a deferred teardown that qemu then refuses stays queued: attach reports the refusal until its cause is gone, then the teardown finishes', async () => {
    const d = await driverIn();
    try {
      const { volumeId, readerId, snapshotId, session } = await volumeWithView(d);
      await addIntruder(session);
      expect(await stalledAt(session, 'block-job-cancel', () => d.deleteSnapshot(snapshotId))).toBe('UNAVAILABLE');
      await d.detach(readerId);
      await sleep(3 * T); // retries without a use meet the refusal too

      await expect(d.attach({ kind: 'volume', id: volumeId }, 'rw')).rejects.toMatchObject({ code: 'CONFLICT' });
      await expect(d.attach({ kind: 'volume', id: volumeId }, 'rw')).rejects.toMatchObject({ code: 'CONFLICT' }); // reported again: not dropped
      await session.deleteExport('intruder');
      await expectCleanWriter(d, session, volumeId);
    } finally {
      await d.close();
    }
  });

  it('a deferred teardown finishes without a new use once the daemon answers (never under the volume lock of another call): the image closes and another instance can write the volume', async () => {
    const d = await driverIn();
    try {
      const { volumeId, readerId, snapshotId, session } = await volumeWithView(d);
      await d.detach(readerId); // the view alone holds the image now
      expect(await stalledAt(session, 'block-job-cancel', () => d.deleteSnapshot(snapshotId))).toBe('UNAVAILABLE');
      const image = imageOf(d, volumeId);

      await runtimeOf(d).locks.run(volumeId, async () => {
        await sleep(4 * T); // a retry is due after one command timeout; it waits for the lock
        expect(session.nodeOf(image)).toBeDefined();
        expect(await leftovers(session)).not.toEqual([]);
      });
      expect(await becomes(() => session.nodeOf(image) === undefined, SETTLED_MS), 'the image closes without a new use').toBe(true);
      expect(await leftovers(session)).toEqual([]);
      expect(await overlaysIn(d.directory)).toEqual([]);

      const peer = await driverIn(d.directory);
      try {
        const w = await peer.attach({ kind: 'volume', id: volumeId }, 'rw'); // qemu's image lock is gone
        await w.device.write(0, pattern(4096, 2));
        await peer.detach(w.id);
      } finally {
        await peer.close();
      }
    } finally {
      await d.close();
    }
  });

  it('close() with a teardown still kept stops the daemon cleanly: no overlay is left, a new driver writes the volume, and the checkpoint is not trusted (no stamp is saved once nothing holds the image)', async () => {
    const d = await driverIn();
    const v = await d.createVolume({ size: 8 * MiB });
    const c = await d.changedBlockTracking.createCheckpoint(v.id);
    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(1 * MiB, pattern(4096, 3));
    const snap = await d.createSnapshot(v.id, 'view');
    await d.detach(w.id); // the view holds the image
    const session = await sessionOf(d);
    await addIntruder(session);
    await expect(d.deleteSnapshot(snap.id)).rejects.toMatchObject({ code: 'CONFLICT' });
    await d.close();
    expect(session.alive).toBe(false);
    expect(await overlaysIn(d.directory)).toEqual([]);

    const again = await driverIn(d.directory);
    try {
      const a = await again.attach({ kind: 'volume', id: v.id }, 'rw');
      // The node was open at `quit`: its image's stamp could not be saved under a hold, so the
      // old one no longer matches and every checkpoint is not consistent (a full backup).
      await expect(a.device.extents({ kind: 'changed', since: c.id })).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await again.detach(a.id);
    } finally {
      await again.close();
    }
  });

  it('cleanup queued on one node is retried one command timeout later even while another node of the same session keeps failing with a long backoff', async () => {
    const U = 2 * T; // this case's command timeout: the backed-off node's retries are 8U apart when the other node is queued
    const d = await driverIn(undefined, U);
    try {
      const one = await volumeWithView(d);
      await addIntruder(one.session);
      await expect(d.deleteSnapshot(one.snapshotId)).rejects.toMatchObject({ code: 'CONFLICT' });
      await d.detach(one.readerId);

      // What the retries do, in order: `one` when the refused teardown's node is retried, `w`
      // when the other node's work has run (its close; nothing else uses either node).
      const oneNode = one.session.deferred.pending().find((p) => p.volumeId === one.volumeId)?.node;
      expect(oneNode, 'the refused teardown is queued').toBeDefined();
      let wNode: string | undefined;
      const log: string[] = [];
      const { deferred } = one.session;
      const run = deferred.run.bind(deferred);
      deferred.run = async (node) => {
        if (node === oneNode) log.push('one');
        await run(node);
        if (node === wNode) log.push('w');
      };
      const w = await d.createVolume({ size: 8 * MiB });
      const a = await d.attach({ kind: 'volume', id: w.id }, 'ro');
      const image = imageOf(d, w.id);
      wNode = one.session.nodeOf(image)!;
      await addIntruder(one.session, wNode, 'intruder-w');

      // Refused at U, 3U and 7U after it was queued: its next retry is 8U after the third, the
      // other node's first U after its close is queued (queued while the third runs, it is still U).
      expect(await becomes(() => log.length >= 3, SETTLED_MS), 'the refused teardown is retried without a use').toBe(true);
      await expect(d.detach(a.id)).rejects.toMatchObject({ code: 'CONFLICT' }); // its close is queued
      log.length = 0;
      await one.session.deleteExport('intruder-w');
      expect(await becomes(() => log.includes('w'), SETTLED_MS), 'the other node is closed without a new use').toBe(true);
      expect(log[0], 'the other node is closed (one command timeout after its close was queued) before the backed-off node is retried again').toBe('w');
      expect(one.session.nodeOf(image)).toBeUndefined();
      expect(one.session.nodeOf(imageOf(d, one.volumeId)), 'the refused teardown still holds its node').toBeDefined();

      await one.session.deleteExport('intruder');
      expect(await becomes(() => one.session.nodeOf(imageOf(d, one.volumeId)) === undefined, SETTLED_MS), 'the backed-off node is retried too').toBe(true);
    } finally {
      await d.close();
    }
  });

  it("cleanup due on one volume is retried while another volume's lock, held by a long call, keeps that volume's own cleanup waiting", async () => {
    const d = await driverIn();
    try {
      /** A volume attached read-only whose detach qemu refuses (an intruder export on its node): its close is queued. */
      const refusedClose = async (intruder: string) => {
        const v = await d.createVolume({ size: 8 * MiB });
        const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
        const session = await sessionOf(d);
        await addIntruder(session, session.nodeOf(imageOf(d, v.id)), intruder);
        await expect(d.detach(a.id)).rejects.toMatchObject({ code: 'CONFLICT' });
        return { volumeId: v.id, session };
      };
      const first = await refusedClose('intruder-v'); // queued first: retried first
      const second = await refusedClose('intruder-w');
      const { session } = second;
      await runtimeOf(d).locks.run(first.volumeId, async () => {
        await session.deleteExport('intruder-v');
        await session.deleteExport('intruder-w');
        expect(await becomes(() => session.nodeOf(imageOf(d, second.volumeId)) === undefined, SETTLED_MS), "the second volume's node closes while the first one's lock is held").toBe(true);
        expect(session.nodeOf(imageOf(d, first.volumeId)), "the first volume's close waits for its lock").toBeDefined();
      });
      expect(await becomes(() => session.nodeOf(imageOf(d, first.volumeId)) === undefined, SETTLED_MS), 'and runs once the lock is free').toBe(true);
    } finally {
      await d.close();
    }
  });

  it('createCheckpoint and deleteCheckpoint whose closing of the volume node gets no reply succeed (the change is committed) and keep the close queued: the image is let go without a new use', async () => {
    const d = await driverIn();
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      const first = await d.changedBlockTracking.createCheckpoint(v.id); // starts the daemon
      const session = await sessionOf(d);
      const image = imageOf(d, v.id);

      let second: string | undefined;
      const created = await stalledAt(session, 'blockdev-del', async () => (second = (await d.changedBlockTracking.createCheckpoint(v.id)).id));
      expect(created).toBe('resolved');
      expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([first.id, second]);
      expect(await becomes(() => session.nodeOf(image) === undefined, SETTLED_MS), 'the queued close runs without a new use').toBe(true);

      expect(await stalledAt(session, 'blockdev-del', () => d.changedBlockTracking.deleteCheckpoint(v.id, first.id))).toBe('resolved');
      expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([second]);
      expect(await becomes(() => session.nodeOf(image) === undefined, SETTLED_MS), 'the queued close runs without a new use').toBe(true);
      await expectCleanWriter(d, session, v.id);
    } finally {
      await d.close();
    }
  });

  it('detach whose close of the volume node qemu refuses fails and keeps the node known, its close queued: the image is let go without a new use once the cause is gone, and attaches read-write again', async () => {
    const d = await driverIn();
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
      const session = await sessionOf(d);
      const image = imageOf(d, v.id);
      await addIntruder(session, session.nodeOf(image)); // on the volume's node itself
      await expect(d.detach(a.id)).rejects.toMatchObject({ code: 'CONFLICT' });
      expect(session.nodeOf(image), 'qemu still has the node (and the image lock): it stays known').toBeDefined();
      await expect(d.attach({ kind: 'volume', id: v.id }, 'rw')).rejects.toMatchObject({ code: 'CONFLICT' }); // the queued close first

      await session.deleteExport('intruder');
      expect(await becomes(() => session.nodeOf(image) === undefined, SETTLED_MS), 'the queued close is retried without a new use').toBe(true);
      expect(await qemuNodes(session)).toEqual([]);
      await expectCleanWriter(d, session, v.id);
    } finally {
      await d.close();
    }
  });
});
