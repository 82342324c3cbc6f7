import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Extent } from '@cairn/core';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, overlaysIn, pattern, tempDir } from './helpers.js';
import { exportOf, leftovers, sessionOf, stalledAt } from './stall.js';

// A QMP command that gets no reply within its timeout fails with UNAVAILABLE, yet qemu still
// runs it once it answers again. Whatever it does then must not leave a view, an export or a
// bitmap Cairn does not know about, nor cost the checkpoint chain. The daemon is frozen with
// SIGSTOP just before the command is sent, and thawed with SIGCONT after the call failed: qemu
// then runs what it was sent, in order, before anything sent later. Only the commands sent to the
// frozen daemon get a short timeout (stalledAt); the others the default one, which an image open
// or close on a busy disk does not reach. One driver (one daemon) for all cases; each leaves
// nothing attached.

const G = 64 * 1024;
let driver: Qcow2VolumeDriver | undefined;

afterAll(async () => {
  await driver?.close().catch(() => {});
  if (driver) await rm(driver.directory, { recursive: true, force: true });
});

async function sharedDriver(): Promise<Qcow2VolumeDriver> {
  driver ??= new Qcow2VolumeDriver({ directory: await tempDir() });
  return driver;
}

const covers = (extents: Extent[], at: number): boolean => extents.some((e) => e.offset <= at && at < e.offset + e.length);

describe.skipIf(missingQemu.length > 0)(`commands that time out and run late leave nothing unknown behind (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('createSnapshot whose transaction ran late: the view it started is torn down by the next attach, which can write', async () => {
    const d = await sharedDriver();
    const v = await d.createVolume({ size: 8 * MiB });
    await d.changedBlockTracking.createCheckpoint(v.id);
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const session = await sessionOf(d);
    expect(await stalledAt(session, 'transaction', () => d.createSnapshot(v.id, 'late'))).toBe('UNAVAILABLE');
    expect(await d.listSnapshots(v.id)).toEqual([]);
    await d.detach(a.id); // a writer cannot attach next to a reader (the teardown may finish meanwhile: deferred-cleanup.test.ts)

    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    expect(await leftovers(session)).toEqual([`export ${exportOf(w)}`]);
    expect(await overlaysIn(d.directory)).toEqual([]);
    await w.device.write(0, pattern(4096, 1));
    await d.detach(w.id);
    expect(session.nodeOf(join(d.directory, 'volumes', `${v.id}.qcow2`))).toBeUndefined();
  });

  it('createSnapshot whose transaction ran late, then detach and deleteVolume: the view is torn down and the image closed before it is deleted', async () => {
    const d = await sharedDriver();
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const session = await sessionOf(d);
    expect(await stalledAt(session, 'transaction', () => d.createSnapshot(v.id, 'late'))).toBe('UNAVAILABLE');
    await d.detach(a.id);
    await d.deleteVolume(v.id);
    expect(await leftovers(session)).toEqual([]);
    expect(session.nodeOf(join(d.directory, 'volumes', `${v.id}.qcow2`))).toBeUndefined();
    expect(await overlaysIn(d.directory)).toEqual([]);
  });

  it('deleteSnapshot whose job cancel ran late: the teardown is finished by the next attach, which can write', async () => {
    const d = await sharedDriver();
    const v = await d.createVolume({ size: 8 * MiB });
    await d.changedBlockTracking.createCheckpoint(v.id);
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const snap = await d.createSnapshot(v.id, 'view');
    const session = await sessionOf(d);
    expect(await stalledAt(session, 'block-job-cancel', () => d.deleteSnapshot(snap.id))).toBe('UNAVAILABLE');
    await d.detach(a.id); // a writer cannot attach next to a reader (the teardown may finish meanwhile: deferred-cleanup.test.ts)

    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    expect(await leftovers(session)).toEqual([`export ${exportOf(w)}`]);
    expect(await overlaysIn(d.directory)).toEqual([]);
    await w.device.write(0, pattern(4096, 1));
    await d.detach(w.id);
    expect(session.nodeOf(join(d.directory, 'volumes', `${v.id}.qcow2`))).toBeUndefined();
  });

  it('deleteCheckpoint whose transaction ran late keeps the older checkpoints: changed since the previous one still covers every write', async () => {
    const d = await sharedDriver();
    const v = await d.createVolume({ size: 8 * MiB });
    const A = await d.changedBlockTracking.createCheckpoint(v.id);
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(1 * MiB, pattern(4096, 1));
    const B = await d.changedBlockTracking.createCheckpoint(v.id);
    await a.device.write(2 * MiB, pattern(4096, 2));
    const session = await sessionOf(d);
    expect(await stalledAt(session, 'transaction', () => d.changedBlockTracking.deleteCheckpoint(v.id, B.id))).toBe('UNAVAILABLE');
    await a.device.write(3 * MiB, pattern(4096, 3)); // recorded by A again (the late transaction re-enabled it)

    await d.changedBlockTracking.deleteCheckpoint(v.id, B.id); // reconciles first; B is gone already
    expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
    expect(await a.device.extents({ kind: 'changed', since: A.id })).toEqual([
      { offset: 1 * MiB, length: G },
      { offset: 2 * MiB, length: G },
      { offset: 3 * MiB, length: G },
    ]);
    await d.detach(a.id);
  });

  it('deleteCheckpoint of a detached volume whose transaction ran late: the reopened image keeps the older checkpoints', async () => {
    const d = await sharedDriver();
    const v = await d.createVolume({ size: 8 * MiB });
    const A = await d.changedBlockTracking.createCheckpoint(v.id);
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(1 * MiB, pattern(4096, 1));
    const B = await d.changedBlockTracking.createCheckpoint(v.id);
    await a.device.write(2 * MiB, pattern(4096, 2));
    await d.detach(a.id);
    const session = await sessionOf(d);
    expect(await stalledAt(session, 'transaction', () => d.changedBlockTracking.deleteCheckpoint(v.id, B.id))).toBe('UNAVAILABLE');

    const r = await d.attach({ kind: 'volume', id: v.id }, 'ro'); // opens the image again (its node was closed)
    expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
    const changed = await r.device.extents({ kind: 'changed', since: A.id });
    expect(covers(changed, 1 * MiB) && covers(changed, 2 * MiB)).toBe(true);
    await d.detach(r.id);
  });

  it('attach whose block-export-add ran late leaves no export: the node closes at the last detach and the volume attaches again', async () => {
    const d = await sharedDriver();
    const v = await d.createVolume({ size: 8 * MiB });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    const session = await sessionOf(d);
    expect(await stalledAt(session, 'block-export-add', () => d.attach({ kind: 'volume', id: v.id }, 'ro'))).toBe('UNAVAILABLE');
    expect(await leftovers(session)).toEqual([`export ${exportOf(a)}`]);

    await d.detach(a.id);
    expect(session.nodeOf(join(d.directory, 'volumes', `${v.id}.qcow2`))).toBeUndefined();
    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(0, pattern(4096, 1));
    await d.detach(w.id);
  });

  it('first attach whose blockdev-add of the volume ran late leaves no node: the volume attaches again', async () => {
    const d = await sharedDriver();
    const v = await d.createVolume({ size: 8 * MiB });
    const session = await sessionOf(d);
    expect(await stalledAt(session, 'blockdev-add', () => d.attach({ kind: 'volume', id: v.id }, 'rw'))).toBe('UNAVAILABLE');
    expect(session.nodeOf(join(d.directory, 'volumes', `${v.id}.qcow2`))).toBeUndefined();
    const nodes = (await session.qmp.execute('query-named-block-nodes', { flat: true })).flatMap((n) => n['node-name'] ?? []);
    expect(nodes.filter((n) => !n.startsWith('#'))).toEqual([]);
    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(0, pattern(4096, 1));
    await d.detach(w.id);
  });
});
