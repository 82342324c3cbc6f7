import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';
import { failNextVolumeSidecarWrite, removeDir, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

const bitmapsOf = async (dir: string, volumeId: string): Promise<string[]> =>
  (await readdir(join(dir, 'volumes', `${volumeId}.cbt`)).catch(() => [] as string[])).filter((n) => n.endsWith('.bitmap')).sort();

describe('a createCheckpoint whose sidecar write fails leaves no bitmap behind (tracker or file)', () => {
  let dir: string;
  let d: FileVolumeDriver;
  beforeEach(async () => {
    dir = await tempDir();
    d = new FileVolumeDriver({ directory: dir });
  });
  afterEach(async () => removeDir(dir));

  for (const landed of [false, true]) {
    const how = landed ? 'the sidecar renamed but its directory fsync failed' : 'no space for the sidecar';
    it(`attached read-write, ${how}: no new bitmap file, not after flush nor detach, and no checkpoint listed`, async () => {
      const v = await d.createVolume({ size: 4 * MiB });
      const A = await d.changedBlockTracking.createCheckpoint(v.id);
      const a = await d.attach({ kind: 'volume', id: v.id }, 'rw');
      failNextVolumeSidecarWrite(d, landed);
      await expect(d.changedBlockTracking.createCheckpoint(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
      expect(await bitmapsOf(dir, v.id)).toEqual([`${A.id}.bitmap`]);
      await a.device.write(MiB, patternBytes(4096, 1));
      await a.device.flush(); // saves the tracker's bitmaps: an orphan one would appear here
      expect(await bitmapsOf(dir, v.id)).toEqual([`${A.id}.bitmap`]);
      await d.detach(a.id);
      expect(await bitmapsOf(dir, v.id)).toEqual([`${A.id}.bitmap`]);
      expect((await d.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
      const r = await d.attach({ kind: 'volume', id: v.id }, 'ro');
      expect(await r.device.extents({ kind: 'changed', since: A.id })).toEqual([{ offset: MiB, length: 64 * 1024 }]);
      await d.detach(r.id);
    });

    it(`detached, ${how}: no bitmap file and no checkpoint listed`, async () => {
      const v = await d.createVolume({ size: 4 * MiB });
      failNextVolumeSidecarWrite(d, landed);
      await expect(d.changedBlockTracking.createCheckpoint(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
      expect(await bitmapsOf(dir, v.id)).toEqual([]);
      expect(await d.changedBlockTracking.listCheckpoints(v.id)).toEqual([]);
    });
  }
});
