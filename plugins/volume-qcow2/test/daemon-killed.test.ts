import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import type { QemuImg } from '../src/qemu-img.js';
import type { RecordStore } from '../src/record-store.js';
import { MiB, driverPair, missingQemu, overlaysIn, pattern } from './helpers.js';
import { becomes, killDaemon } from './refusals.js';
import { sessionOf } from './stall.js';
import type { DaemonSession } from '../src/daemon-session.js';

// The daemon dies (SIGKILL) in the middle of an operation that relies on what it holds.

const dirs: string[] = [];
const drivers: Qcow2VolumeDriver[] = [];
afterAll(async () => {
  for (const d of drivers) await d.close().catch(() => {});
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (err: { code?: string }) => err.code,
  );
}

/**
 * Runs `call`, SIGKILLing the daemon right after the first QMP `command` is sent, with no reply
 * to it ever: the daemon is frozen (SIGSTOP) before the command is sent, so it cannot answer
 * before the kill lands. Returns the error code `call` failed with ('resolved' if none).
 */
async function killedAt(session: DaemonSession, command: string, call: () => Promise<unknown>): Promise<string> {
  const qmp = session.qmp;
  const execute = qmp.execute.bind(qmp) as (c: string, ...rest: unknown[]) => Promise<unknown>;
  let killed = false;
  (qmp as unknown as { execute: typeof execute }).execute = (c, ...rest) => {
    const now = c === command && !killed;
    if (now) session.daemon.signal('SIGSTOP');
    const sent = execute(c, ...rest);
    if (now) {
      killed = true;
      session.daemon.signal('SIGKILL');
    }
    return sent;
  };
  try {
    const code = await call().then(
      () => 'resolved',
      (e: { code?: string }) => String(e.code),
    );
    expect(killed, `${command} was sent`).toBe(true);
    return code;
  } finally {
    delete (qmp as unknown as { execute?: unknown }).execute;
  }
}

const G = 64 * 1024;

describe.skipIf(missingQemu.length > 0)(`the daemon killed inside an operation (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a snapshot copy whose daemon (and with it the image hold) died during the copy fails with UNAVAILABLE and leaves no snapshot, even though another instance deleted the volume meanwhile', async () => {
    const [d1, d2] = await driverPair(dirs);
    drivers.push(d1, d2);
    const v = await d1.createVolume({ size: 4 * MiB });
    const w = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(0, pattern(MiB, 1));
    await d1.detach(w.id); // closed: a snapshot is a copy

    // While the copy runs, d1's daemon dies: its hold of the image goes with it, and d2 deletes the volume.
    const qemuImg = (d1 as unknown as { qemuImg: QemuImg }).qemuImg;
    const copy = qemuImg.copyWithBitmaps.bind(qemuImg);
    let deletedMeanwhile = false;
    qemuImg.copyWithBitmaps = async (src, dst, shared) => {
      await killDaemon(d1, await sessionOf(d1));
      await copy(src, dst, shared);
      await d2.deleteVolume(v.id); // the image is no longer held: this succeeds
      deletedMeanwhile = true;
    };
    expect(await codeOf(d1.createSnapshot(v.id))).toBe('UNAVAILABLE');
    expect(deletedMeanwhile).toBe(true);
    // No snapshot of the deleted volume is left behind: no sidecar, no copy (the stamp's clock probe is none).
    expect((await readdir(join(d1.directory, 'snapshots')).catch(() => [] as string[])).filter((n) => n !== '.clock')).toEqual([]);
    expect(await d2.listVolumes()).toEqual([]);
  });

  it.each(['createCheckpoint', 'deleteCheckpoint'] as const)('%s whose transaction was sent when the daemon died fails with UNAVAILABLE; the next calls start a new daemon, report the checkpoints NOT_FOUND (never an empty change list) and track again', async (call) => {
    const [d] = await driverPair(dirs);
    drivers.push(d);
    const v = await d.createVolume({ size: 4 * MiB });
    const c1 = await d.changedBlockTracking.createCheckpoint(v.id);
    const c2 = await d.changedBlockTracking.createCheckpoint(v.id);
    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(MiB, pattern(G, 2));
    await w.device.flush();
    const session = await sessionOf(d);
    const code = await killedAt(session, 'transaction', () =>
      call === 'createCheckpoint' ? d.changedBlockTracking.createCheckpoint(v.id) : d.changedBlockTracking.deleteCheckpoint(v.id, c2.id),
    );
    expect(code).toBe('UNAVAILABLE');
    await expect(w.device.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await d.detach(w.id);
    // The dead daemon's runtime directory (QMP and NBD sockets, pid) does not stay behind.
    expect(await becomes(() => !existsSync(session.daemon.dir), 5000), 'its runtime dir is removed').toBe(true);

    const r = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    expect(await d.daemonPid()).not.toBe(session.daemon.pid);
    expect(Buffer.compare(await r.device.read(MiB, G), pattern(G, 2))).toBe(0);
    for (const c of await d.changedBlockTracking.listCheckpoints(v.id)) {
      await expect(r.device.extents({ kind: 'changed', since: c.id })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    }
    expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id).slice(0, 1)).toEqual([c1.id]);
    await d.detach(r.id);
    const fresh = await d.changedBlockTracking.createCheckpoint(v.id);
    const w2 = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await w2.device.write(2 * MiB, pattern(512, 3));
    expect(await w2.device.extents({ kind: 'changed', since: fresh.id })).toEqual([{ offset: 2 * MiB, length: G }]);
    await d.detach(w2.id);
  });

  it('extendVolume whose block_resize was sent when the daemon died fails with UNAVAILABLE; the checkpoints are lost, and the next extend to that size succeeds and attaches at it', async () => {
    const [d] = await driverPair(dirs);
    drivers.push(d);
    const v = await d.createVolume({ size: 4 * MiB });
    const c1 = await d.changedBlockTracking.createCheckpoint(v.id);
    await d.changedBlockTracking.createCheckpoint(v.id); // starts the daemon, whose node is closed again
    const session = await sessionOf(d);
    expect(await killedAt(session, 'block_resize', () => d.extendVolume(v.id, 8 * MiB))).toBe('UNAVAILABLE');
    expect((await d.extendVolume(v.id, 8 * MiB)).size).toBe(8 * MiB);
    const r = await d.attach({ kind: 'volume', id: v.id }, 'ro');
    expect(r.device.size).toBe(8 * MiB);
    for (const c of await d.changedBlockTracking.listCheckpoints(v.id)) {
      await expect(r.device.extents({ kind: 'changed', since: c.id })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    }
    await d.detach(r.id);
  });

  it.each(['blockdev-add', 'block-export-add', 'query-named-block-nodes'])('an attach whose %s was sent when the daemon died fails with UNAVAILABLE, leaves the volume available, and the next attach serves the data', async (command) => {
    const [d] = await driverPair(dirs);
    drivers.push(d);
    const v = await d.createVolume({ size: 4 * MiB });
    await d.changedBlockTracking.createCheckpoint(v.id); // starts the daemon
    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(0, pattern(MiB, 4));
    await d.detach(w.id);
    const session = await sessionOf(d);
    expect(await killedAt(session, command, () => d.attach({ kind: 'volume', id: v.id }, 'rw'))).toBe('UNAVAILABLE');
    expect((await d.getVolume(v.id)).status).toBe('available');
    const r = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    expect(Buffer.compare(await r.device.read(0, MiB), pattern(MiB, 4))).toBe(0);
    await d.detach(r.id);
  });

  it('a fleecing view whose transaction was sent when the daemon died fails with UNAVAILABLE; the next call leaves no overlay, no view, and a new view reads the volume', async () => {
    const [d] = await driverPair(dirs);
    drivers.push(d);
    const v = await d.createVolume({ size: 4 * MiB });
    await d.changedBlockTracking.createCheckpoint(v.id);
    const w = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(0, pattern(MiB, 5));
    await w.device.flush();
    const session = await sessionOf(d);
    expect(await killedAt(session, 'transaction', () => d.createSnapshot(v.id, 'view'))).toBe('UNAVAILABLE');
    await d.detach(w.id);
    expect(await d.listSnapshots(v.id)).toEqual([]);
    const r = await d.attach({ kind: 'volume', id: v.id }, 'ro'); // a new daemon; its start sweeps this instance's overlays
    expect(await overlaysIn(d.directory)).toEqual([]);
    const s = await d.createSnapshot(v.id, 'view');
    const sa = await d.attach({ kind: 'snapshot', id: s.id }, 'ro');
    expect(Buffer.compare(await sa.device.read(0, MiB), pattern(MiB, 5))).toBe(0);
    await d.detach(sa.id);
    await d.deleteSnapshot(s.id);
    await d.detach(r.id);
  });

  it('a deleteVolume whose daemon (and with it the image hold) died before the removal fails with UNAVAILABLE and removes nothing, though another instance attached the volume meanwhile', async () => {
    const [d1, d2] = await driverPair(dirs);
    drivers.push(d1, d2);
    const v = await d1.createVolume({ size: 4 * MiB });
    await d1.changedBlockTracking.createCheckpoint(v.id); // starts d1's daemon

    // deleteVolume counts snapshots again once it holds the image: there d1's daemon dies, and d2 attaches.
    const store = (d1 as unknown as { store: RecordStore }).store;
    const snapshotListing = store.snapshotListing.bind(store);
    let calls = 0;
    let other: Awaited<ReturnType<Qcow2VolumeDriver['attach']>> | undefined;
    store.snapshotListing = async (names) => {
      if (++calls === 2) {
        await killDaemon(d1, await sessionOf(d1));
        other = await d2.attach({ kind: 'volume', id: v.id }, 'rw'); // the image is no longer held
      }
      return snapshotListing(names);
    };
    expect(await codeOf(d1.deleteVolume(v.id))).toBe('UNAVAILABLE');
    expect(other).toBeDefined();
    // The volume another instance writes is still there, whole.
    expect((await d2.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    expect(existsSync(join(d1.directory, 'volumes', `${v.id}.qcow2`))).toBe(true);
    await other!.device.write(0, pattern(G, 6));
    await d2.detach(other!.id);
    const r = await d2.attach({ kind: 'volume', id: v.id }, 'ro');
    expect(Buffer.compare(await r.device.read(0, G), pattern(G, 6))).toBe(0);
    await d2.detach(r.id);
    // Once nobody holds it, d1 deletes it (with a new daemon).
    store.snapshotListing = snapshotListing;
    await d1.deleteVolume(v.id);
    expect(await d2.listVolumes()).toEqual([]);
  });

  it('a deleteSnapshot of a copy whose daemon (and with it the copy\'s hold) died once it held the copy fails with UNAVAILABLE and removes nothing, though another instance attached the copy meanwhile', async () => {
    const [d1, d2] = await driverPair(dirs);
    drivers.push(d1, d2);
    const v = await d1.createVolume({ size: 4 * MiB });
    const w = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await w.device.write(0, pattern(G, 7));
    await d1.detach(w.id);
    const snap = await d1.createSnapshot(v.id); // closed volume: a copy; d1's daemon runs

    // The hold's last step (its export) answers; then d1's daemon dies and d2 attaches the copy.
    const session = await sessionOf(d1);
    const qmp = session.qmp;
    const execute = qmp.execute.bind(qmp) as (c: string, ...rest: unknown[]) => Promise<unknown>;
    let other: Awaited<ReturnType<Qcow2VolumeDriver['attach']>> | undefined;
    (qmp as unknown as { execute: typeof execute }).execute = async (c, ...rest) => {
      const answer = await execute(c, ...rest);
      if (c === 'block-export-add' && !other) {
        await killDaemon(d1, session);
        other = await d2.attach({ kind: 'snapshot', id: snap.id }, 'ro'); // the copy is no longer held
      }
      return answer;
    };
    expect(await codeOf(d1.deleteSnapshot(snap.id))).toBe('UNAVAILABLE');
    expect(other).toBeDefined();
    expect((await d2.listSnapshots(v.id)).map((x) => x.id)).toEqual([snap.id]);
    expect(Buffer.compare(await other!.device.read(0, G), pattern(G, 7))).toBe(0);
    await d2.detach(other!.id);
    await d1.deleteSnapshot(snap.id); // a new daemon: nobody holds the copy now
    expect(await d2.listSnapshots(v.id)).toEqual([]);
  });
});
