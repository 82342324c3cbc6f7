import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import type { DaemonSession } from '../src/daemon-session.js';
import { MiB, missingQemu, pattern, tempDir } from './helpers.js';
import { exportOf, leftovers, runtimeOf, sessionOf, stalledAt } from './stall.js';

// Cleanup that does not finish — the daemon did not answer (SIGSTOP here), or refused a step —
// is kept and retried until it succeeds (DeferredWork): before the volume's next use, which
// reports its error while it still fails, and on a timer without any use. A refusal is made
// here by an export of the view's overlay that Cairn did not make (an "intruder"): qemu will not
// delete a node an export uses (CONFLICT) until that export is gone. One driver per case.

const T = 250;
const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function driverIn(dir?: string): Promise<Qcow2VolumeDriver> {
  const directory = dir ?? (await tempDir());
  if (!dir) dirs.push(directory);
  return new Qcow2VolumeDriver({ directory, commandTimeoutMs: T });
}

const imageOf = (d: Qcow2VolumeDriver, volumeId: string): string => join(d.directory, 'volumes', `${volumeId}.qcow2`);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 25 ms for up to `ms`; whether it became true. */
async function becomes(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(25)) if (await check()) return true;
  return check();
}

/** Exports the view's overlay node under the id `intruder`, so qemu refuses to delete the node. */
async function addIntruder(session: DaemonSession): Promise<void> {
  const nodes = (await session.qmp.execute('query-named-block-nodes', { flat: true })).flatMap((n) => n['node-name'] ?? []);
  const overlay = nodes.find((n) => /^ov\d+$/.test(n));
  expect(overlay, 'the view has an overlay node').toBeDefined();
  await session.qmp.execute('block-export-add', { type: 'nbd', id: 'intruder', 'node-name': overlay!, name: 'intruder', writable: false });
}

/** A volume attached read-only with a view: the view's teardown is what the cases disturb. */
async function volumeWithView(d: Qcow2VolumeDriver): Promise<{ volumeId: string; readerId: string; snapshotId: string; session: DaemonSession }> {
  const v = await d.createVolume({ size: 8 * MiB });
  await d.changedBlockTracking.createCheckpoint(v.id);
  const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
  const snap = await d.createSnapshot(v.id, 'view');
  return { volumeId: v.id, readerId: a.id, snapshotId: snap.id, session: await sessionOf(d) };
}

/** The volume attaches read-write with nothing else in qemu, takes a write, and its image closes at detach. */
async function expectCleanWriter(d: Qcow2VolumeDriver, session: DaemonSession, volumeId: string): Promise<void> {
  const w = await d.attach({ kind: 'volume', id: volumeId }, 'rw');
  expect(await leftovers(session)).toEqual([`export ${exportOf(w)}`]);
  expect(await readdir(join(d.directory, 'views'))).toEqual([]);
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
      expect(await becomes(() => session.nodeOf(image) === undefined, 20 * T), 'the image closes without a new use').toBe(true);
      expect(await leftovers(session)).toEqual([]);
      expect(await readdir(join(d.directory, 'views'))).toEqual([]);

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

  it('close() with a teardown still kept stops the daemon cleanly: the checkpoint keeps the writes, no overlay is left, and a new driver writes the volume', async () => {
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
    expect(await readdir(join(d.directory, 'views'))).toEqual([]);

    const again = await driverIn(d.directory);
    try {
      const a = await again.attach({ kind: 'volume', id: v.id }, 'rw');
      const changed = await a.device.extents({ kind: 'changed', since: c.id });
      expect(changed.some((e) => e.offset <= 1 * MiB && 1 * MiB < e.offset + e.length)).toBe(true);
      await again.detach(a.id);
    } finally {
      await again.close();
    }
  });
});
