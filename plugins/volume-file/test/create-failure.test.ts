import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileVolumeDriver } from '../src/index.js';
import { removeDir, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

type Put = (r: { kind: string }) => Promise<void>;

/**
 * Makes the driver's next volume sidecar write fail: `landed` true as a failed fsync of the
 * directory after the rename would (the sidecar is in place, the call fails), false as a full
 * disk would (nothing written).
 */
function failNextVolumeSidecarWrite(d: FileVolumeDriver, landed: boolean): void {
  const store = (d as unknown as { ctx: { store: { put: Put } } }).ctx.store;
  const put = store.put.bind(store);
  let armed = true;
  store.put = async (r) => {
    if (!armed || r.kind !== 'volume') return put(r);
    armed = false;
    if (landed) await put(r);
    throw Object.assign(new Error(landed ? 'EIO: i/o error, fsync' : 'ENOSPC: no space left on device, write'), { code: landed ? 'EIO' : 'ENOSPC' });
  };
}

describe('a createVolume that fails leaves nothing listed', () => {
  let dir: string;
  let d: FileVolumeDriver;
  beforeEach(async () => {
    dir = await tempDir();
    d = new FileVolumeDriver({ directory: dir });
  });
  afterEach(async () => removeDir(dir));

  for (const landed of [true, false]) {
    it(`${landed ? 'the sidecar renamed into place but the directory fsync failed' : 'no space for the sidecar'}: the error is raised, no volume is listed, no file stays in volumes/`, async () => {
      failNextVolumeSidecarWrite(d, landed);
      await expect(d.createVolume({ size: 4 * MiB, name: 'broken' })).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
      expect(await d.listVolumes()).toEqual([]);
      expect(await readdir(join(dir, 'volumes'))).toEqual([]);
      const v = await d.createVolume({ size: 4 * MiB }); // the directory still works
      expect((await d.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    });
  }
});
