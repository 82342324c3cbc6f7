import { rm } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import type { Attachment, Snapshot } from '@cairn/core';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, pattern, tempDir } from './helpers.js';
import { addIntruder, becomes, imageOf, killDaemon, SETTLED_MS, sleep, volumeWithView } from './refusals.js';
import { boundSessionsBy, leftovers, runtimeOf, sessionOf } from './stall.js';

// A daemon dies and the driver starts a new one (a new session) while work of the old one is
// still about: its deferred cleanup's retry pending or waiting for a volume's lock, its exit not
// yet noticed. Nothing of the old session may hold back or undo the new one's: each session has
// its own retry, and its own nodes and filters (whose names repeat from one session to the next).
// Refusals are made by an "intruder" export (refusals.ts). One driver per case. The command
// timeout T spaces the retries only: every command of the daemon gets a generous bound
// (boundSessionsBy).

const T = 250;
boundSessionsBy();
const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function driverIn(): Promise<Qcow2VolumeDriver> {
  const directory = await tempDir();
  dirs.push(directory);
  return new Qcow2VolumeDriver({ directory, commandTimeoutMs: T });
}

/** Attaches the volume read-write, writes, and checks that a snapshot view still reads the old data. */
async function expectWriterBesideView(d: Qcow2VolumeDriver, volumeId: string, snapshotId: string): Promise<void> {
  const w = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
  await w.device.write(0, pattern(4096, 9));
  await d.detach(w.id);
  const view = await d.attach({ kind: 'snapshot', id: snapshotId }, 'ro');
  expect(await view.device.read(0, 4096)).toEqual(Buffer.alloc(4096)); // written through the view's filter
  await d.detach(view.id);
}

describe.skipIf(missingQemu.length > 0)(`a new daemon session is independent of the dead one (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a teardown queued in a new session is retried by itself while the dead session’s retry is still far off', async () => {
    const d = await driverIn();
    try {
      const one = await volumeWithView(d);
      await addIntruder(one.session);
      await expect(d.deleteSnapshot(one.snapshotId)).rejects.toMatchObject({ code: 'CONFLICT' });
      await d.detach(one.readerId);
      await sleep(7.5 * T); // refused again at T, 3T and 7T: the next retry would be 8T later
      await killDaemon(d, one.session);

      const two = await volumeWithView(d); // a new daemon
      expect(two.session).not.toBe(one.session);
      await addIntruder(two.session);
      await expect(d.deleteSnapshot(two.snapshotId)).rejects.toMatchObject({ code: 'CONFLICT' });
      await d.detach(two.readerId);
      await two.session.deleteExport('intruder');

      const image = imageOf(d, two.volumeId);
      expect(await becomes(() => two.session.nodeOf(image) === undefined, 10 * T), 'the teardown finishes without a new use').toBe(true);
      expect(await leftovers(two.session)).toEqual([]);
    } finally {
      await d.close();
    }
  });

  it('a retry of a dead session’s teardown that waited for the volume’s lock does not run it: the new session’s view keeps its filter, and a rw attach writes through it', async () => {
    const d = await driverIn();
    try {
      // The same calls in both sessions give the same node and filter names.
      const v = await d.createVolume({ size: 8 * MiB });
      await d.attach({ kind: 'volume', id: v.id }, 'ro');
      const old = await d.createSnapshot(v.id, 'old');
      const s1 = await sessionOf(d);
      await addIntruder(s1);
      await expect(d.deleteSnapshot(old.id)).rejects.toMatchObject({ code: 'CONFLICT' }); // queued; a retry is due after T

      let reader!: Promise<Attachment>;
      let view!: Promise<Snapshot>;
      await runtimeOf(d).locks.run(v.id, async () => {
        reader = d.attach({ kind: 'volume', id: v.id }, 'ro'); // both wait for the lock, ahead of the retry
        view = d.createSnapshot(v.id, 'new');
        await sleep(2 * T); // the retry found s1 alive and waits for the lock too
        await killDaemon(d, s1);
      });
      const r = await reader; // in a new session
      const snap = await view;
      expect(await sessionOf(d)).not.toBe(s1);
      await runtimeOf(d).locks.run(v.id, async () => {}); // the retry has had its turn

      await d.detach(r.id);
      await expectWriterBesideView(d, v.id, snap.id);
      await d.deleteSnapshot(snap.id);
    } finally {
      await d.close();
    }
  });

  it('a dead daemon whose exit is noticed after a new session made a view takes none of the new session’s filters along: a rw attach writes through the view’s filter', async () => {
    const d = await driverIn();
    try {
      const first = await d.createVolume({ size: 8 * MiB });
      const gone = await d.attach({ kind: 'volume', id: first.id }, 'ro');
      const s1 = await sessionOf(d);
      await s1.qmp.close(); // the session is dead for the driver, its daemon not exited yet

      const v = await d.createVolume({ size: 8 * MiB });
      const r = await d.attach({ kind: 'volume', id: v.id }, 'ro'); // a new daemon
      expect(await sessionOf(d)).not.toBe(s1);
      const snap = await d.createSnapshot(v.id, 'view');
      expect((gone.device as unknown as { isClosed: boolean }).isClosed).toBe(false);
      s1.daemon.signal('SIGKILL');
      // The driver's exit handlers have run: they dropped the dead session's attachment (lose: closed).
      expect(await becomes(() => (gone.device as unknown as { isClosed: boolean }).isClosed, SETTLED_MS), 'the driver saw the daemon exit').toBe(true);

      await d.detach(r.id);
      await expectWriterBesideView(d, v.id, snap.id);
      await d.deleteSnapshot(snap.id);
    } finally {
      await d.close();
    }
  });
});
