import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Qcow2VolumeDriver } from '../src/index.js';
import type { RecordStore } from '../src/record-store.js';
import { disposeDriver, freshDriver, MiB, missingQemu, pattern } from './helpers.js';

// A createVolume or a snapshot copy is all or nothing: a sidecar write that fails after its rename
// (the directory fsync) leaves a sidecar in place although the call fails. The failed call must
// leave nothing listed, or at worst (the sidecar cannot be removed either) a listed volume or
// snapshot that attaches — never a sidecar naming an image that was removed.

const SIZE = 4 * MiB;
type Kind = 'volume' | 'snapshot';

/** The driver's sidecar store, for fault injection. */
const storeOf = (d: Qcow2VolumeDriver): RecordStore => (d as unknown as { store: RecordStore }).store;

/**
 * Makes the next sidecar write of `kind` fail: `landed` true as a failed fsync of the directory
 * after the rename would (the sidecar is in place, the call fails), false as a full disk would.
 */
function failNextSidecarWrite(d: Qcow2VolumeDriver, kind: Kind, landed: boolean): void {
  const store = storeOf(d);
  const put = store.put.bind(store);
  let armed = true;
  store.put = (async (r) => {
    if (!armed || r.kind !== kind) return put(r);
    armed = false;
    if (landed) await put(r);
    throw Object.assign(new Error(landed ? 'EIO: i/o error, fsync' : 'ENOSPC: no space left on device, write'), { code: landed ? 'EIO' : 'ENOSPC' });
  }) as RecordStore['put'];
}

/** Makes every removal of a `kind` sidecar fail (EIO, nothing removed). */
function failSidecarRemovals(d: Qcow2VolumeDriver, kind: Kind): () => void {
  const store = storeOf(d);
  const remove = store.remove.bind(store);
  store.remove = (async (k, id) => {
    if (k === kind) throw Object.assign(new Error('EIO: i/o error, unlink'), { code: 'EIO' });
    return remove(k, id);
  }) as RecordStore['remove'];
  return () => {
    store.remove = remove;
  };
}

/** The files of a volume or snapshot in the directory (not `volumes/.clock`, the image stamps' probe file). */
const filesIn = async (d: Qcow2VolumeDriver, kind: Kind): Promise<string[]> => (await readdir(join(d.directory, kind === 'volume' ? 'volumes' : 'snapshots'))).filter((f) => f !== '.clock');

describe.skipIf(missingQemu.length > 0)(`failed creates leave nothing listed (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  let d: Qcow2VolumeDriver;
  beforeEach(async () => {
    d = await freshDriver();
  });
  afterEach(async () => disposeDriver(d));

  for (const landed of [true, false]) {
    it(`createVolume, ${landed ? 'the sidecar renamed into place but the directory fsync failed' : 'no space for the sidecar'}: the error is raised, no volume is listed, no file stays in volumes/`, async () => {
      failNextSidecarWrite(d, 'volume', landed);
      await expect(d.createVolume({ size: SIZE, name: 'broken' })).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'qcow2' });
      expect(await d.listVolumes()).toEqual([]);
      expect(await filesIn(d, 'volume')).toEqual([]);
      const v = await d.createVolume({ size: SIZE }); // the directory still works
      expect((await d.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    });
  }

  it('createVolume whose landed sidecar cannot be removed either: the error is raised, and the volume listed attaches', async () => {
    failNextSidecarWrite(d, 'volume', true);
    const restore = failSidecarRemovals(d, 'volume');
    await expect(d.createVolume({ size: SIZE, name: 'kept' })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    restore();
    const listed = await d.listVolumes();
    expect(listed.map((v) => [v.name, v.size])).toEqual([['kept', SIZE]]);
    const a = await d.attach({ kind: 'volume', id: listed[0]!.id }, 'rw');
    await a.device.write(0, pattern(4096, 1));
    expect(Buffer.from(await a.device.read(0, 4096))).toEqual(pattern(4096, 1));
    await d.detach(a.id);
    await d.deleteVolume(listed[0]!.id);
  });

  for (const landed of [true, false]) {
    it(`snapshot copy, ${landed ? 'the sidecar renamed into place but the directory fsync failed' : 'no space for the sidecar'}: the error is raised, no snapshot is listed, no file stays in snapshots/, the volume deletes`, async () => {
      const v = await d.createVolume({ size: SIZE });
      failNextSidecarWrite(d, 'snapshot', landed);
      await expect(d.createSnapshot(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'qcow2' });
      expect(await d.listSnapshots(v.id)).toEqual([]);
      expect(await filesIn(d, 'snapshot')).toEqual([]);
      await d.deleteVolume(v.id); // not BUSY: it has no snapshot
      expect(await d.listVolumes()).toEqual([]);
    });
  }

  it('snapshot copy whose landed sidecar cannot be removed either: the error is raised, and the snapshot listed attaches with the data', async () => {
    const v = await d.createVolume({ size: SIZE });
    const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(MiB, pattern(4096, 2));
    await d.detach(a.id);
    failNextSidecarWrite(d, 'snapshot', true);
    const restore = failSidecarRemovals(d, 'snapshot');
    await expect(d.createSnapshot(v.id, 'kept')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    restore();
    const listed = await d.listSnapshots(v.id);
    expect(listed.map((s) => [s.name, s.size])).toEqual([['kept', SIZE]]);
    const s = await d.attach({ kind: 'snapshot', id: listed[0]!.id }, 'ro');
    expect(Buffer.from(await s.device.read(MiB, 4096))).toEqual(pattern(4096, 2));
    await d.detach(s.id);
    await d.deleteSnapshot(listed[0]!.id);
    await d.deleteVolume(v.id);
  });
});
