import { describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, missingQemu, pattern, qemuImg } from './helpers.js';
import { driversOn } from './drivers-on.js';
import { changedSince as changed, writeVolume } from './volume-io.js';

const SIZE = 8 * MiB;
const G = 64 * 1024;
const driverOn = driversOn();

const write = (driver: Qcow2VolumeDriver, volumeId: string, at: number, length: number, seed: number): Promise<void> => writeVolume(driver, volumeId, at, pattern(length, seed));

describe.skipIf(missingQemu.length > 0)(`dirty bitmaps as checkpoints (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('extents(changed) still reports the writes after a clean daemon restart (close, then a new driver)', async () => {
    const d1 = await driverOn();
    const v = await d1.createVolume({ size: SIZE });
    await write(d1, v.id, 0, SIZE, 1);
    const cp = await d1.changedBlockTracking.createCheckpoint(v.id);
    const a = await d1.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(3 * MiB + 100, pattern(1000, 2)); // the daemon is stopped with this attachment open
    await d1.close();
    const info = JSON.parse(qemuImg(['info', '--output=json', `${d1.directory}/volumes/${v.id}.qcow2`]).stdout);
    expect(info['format-specific'].data.bitmaps.map((b: { name: string }) => b.name)).toEqual([cp.id]);

    const d2 = await driverOn(d1.directory);
    expect(await changed(d2, { kind: 'volume', id: v.id }, cp.id)).toEqual([{ offset: 3 * MiB, length: G }]);
    await d2.close();
  });

  it('after SIGKILL of the daemon extents(changed) fails with NOT_FOUND; a new checkpoint tracks again', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: SIZE });
    const old = await d.changedBlockTracking.createCheckpoint(v.id); // persisted cleanly (node closed)
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, pattern(G, 3));
    const cp = await d.changedBlockTracking.createCheckpoint(v.id); // lives only in the running daemon
    await a.device.write(MiB, pattern(G, 4));
    expect(await a.device.extents({ kind: 'changed', since: old.id })).toEqual([{ offset: 0, length: G }, { offset: MiB, length: G }]);
    process.kill((await d.daemonPid())!, 'SIGKILL');
    await expect(a.device.read(0, 512)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await d.detach(a.id);
    expect((await d.getVolume(v.id)).status).toBe('available');

    // The next call starts a new daemon; the images' bitmaps came back inconsistent or missing.
    await expect(changed(d, { kind: 'volume', id: v.id }, cp.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(changed(d, { kind: 'volume', id: v.id }, old.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([old.id, cp.id]);
    const fresh = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, 2 * MiB, 512, 5);
    expect(await changed(d, { kind: 'volume', id: v.id }, fresh.id)).toEqual([{ offset: 2 * MiB, length: G }]);
    await d.close();
  });

  it('deleteCheckpoint of a middle or the newest checkpoint keeps older checkpoints complete', async () => {
    const d = await driverOn();
    const cbt = d.changedBlockTracking;
    const v = await d.createVolume({ size: SIZE });
    const c1 = await cbt.createCheckpoint(v.id);
    await write(d, v.id, 0, 512, 1);
    const c2 = await cbt.createCheckpoint(v.id);
    await write(d, v.id, MiB, 512, 2);
    const c3 = await cbt.createCheckpoint(v.id);
    await write(d, v.id, 2 * MiB, 512, 3);
    const all = [{ offset: 0, length: G }, { offset: MiB, length: G }, { offset: 2 * MiB, length: G }];
    await cbt.deleteCheckpoint(v.id, c2.id);
    expect(await changed(d, { kind: 'volume', id: v.id }, c1.id)).toEqual(all);
    await cbt.deleteCheckpoint(v.id, c3.id); // the recording one: c1 records again
    await write(d, v.id, 3 * MiB, 512, 4);
    expect(await changed(d, { kind: 'volume', id: v.id }, c1.id)).toEqual([...all, { offset: 3 * MiB, length: G }]);
    expect((await cbt.listCheckpoints(v.id)).map((c) => c.id)).toEqual([c1.id]);
    await d.close();
  });

  it('a snapshot copy of a detached volume keeps its bitmaps: extents(changed) on it reports the writes before it, not after', async () => {
    const d = await driverOn();
    const v = await d.createVolume({ size: SIZE });
    const cp = await d.changedBlockTracking.createCheckpoint(v.id);
    await write(d, v.id, 5 * MiB, 4096, 1);
    const snap = await d.createSnapshot(v.id, 'copy');
    await write(d, v.id, 6 * MiB, 4096, 2);
    expect(await changed(d, { kind: 'snapshot', id: snap.id }, cp.id)).toEqual([{ offset: 5 * MiB, length: G }]);
    expect(await changed(d, { kind: 'volume', id: v.id }, cp.id)).toEqual([{ offset: 5 * MiB, length: G }, { offset: 6 * MiB, length: G }]);
    await expect(changed(d, { kind: 'snapshot', id: snap.id }, 'no-such-checkpoint')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await d.deleteSnapshot(snap.id);
    await disposeDriver(d);
  });
});
