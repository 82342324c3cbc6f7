import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;

/** Makes the driver's next snapshot sidecar write fail as a full disk would (after the copy used the last space). */
function failSnapshotSidecar(d: FileVolumeDriver): void {
  const store = (d as unknown as { ctx: { store: { put: (r: { kind: string }) => Promise<void> } } }).ctx.store;
  const put = store.put.bind(store);
  store.put = async (r) => {
    if (r.kind === 'snapshot') throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    return put(r);
  };
}

describe('a createSnapshot that fails leaves nothing behind', () => {
  const t = driverPerTest();

  it('of a volume attached read-write with a checkpoint: UNAVAILABLE, and no image copy or bitmaps stay in snapshots/', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, patternBytes(MiB, 1));
    await t.driver.changedBlockTracking.createCheckpoint(v.id);
    failSnapshotSidecar(t.driver);
    await expect(t.driver.createSnapshot(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
    expect(await readdir(join(t.dir, 'snapshots'))).toEqual([]);
    expect(await t.driver.listSnapshots(v.id)).toEqual([]);
    await t.driver.detach(a.id);
  });

  it('of a detached volume: the same, and the volume can be deleted afterwards', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(MiB, patternBytes(MiB, 2));
    await t.driver.detach(a.id);
    await t.driver.changedBlockTracking.createCheckpoint(v.id);
    failSnapshotSidecar(t.driver);
    await expect(t.driver.createSnapshot(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
    expect(await readdir(join(t.dir, 'snapshots'))).toEqual([]);
    await t.driver.deleteVolume(v.id);
  });
});

describe('a createSnapshot whose sidecar landed although its write failed', () => {
  const t = driverPerTest();

  type Store = { put: (r: { kind: string }) => Promise<void>; remove: (kind: string, id: string) => Promise<void> };
  const storeOf = (driver: FileVolumeDriver): Store => (driver as unknown as { ctx: { store: Store } }).ctx.store;

  it('and cannot be removed either: the error is raised, and the snapshot listed attaches with the data', async () => {
    const v = await t.driver.createVolume({ size: 4 * MiB });
    const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
    await a.device.write(0, patternBytes(MiB, 3));
    await t.driver.detach(a.id);
    const store = storeOf(t.driver);
    const put = store.put.bind(store);
    const remove = store.remove.bind(store);
    // The sidecar is renamed into place, then the directory fsync fails; removing it fails too.
    store.put = async (r) => {
      if (r.kind !== 'snapshot') return put(r);
      await put(r);
      throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    };
    store.remove = async (kind, id) => {
      if (kind === 'snapshot') throw Object.assign(new Error('EIO: i/o error, unlink'), { code: 'EIO' });
      return remove(kind, id);
    };
    await expect(t.driver.createSnapshot(v.id)).rejects.toMatchObject({ driver: 'file' });
    store.put = put;
    store.remove = remove;
    const [snap] = await t.driver.listSnapshots(v.id);
    expect(snap).toBeDefined();
    const s = await t.driver.attach({ kind: 'snapshot', id: snap!.id }, 'ro');
    expect(Buffer.from(await s.device.read(0, MiB)).equals(patternBytes(MiB, 3))).toBe(true);
    await t.driver.detach(s.id);
    await t.driver.deleteSnapshot(snap!.id);
    await t.driver.deleteVolume(v.id);
  });
});
