import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@cairn/conformance';
import { driverPerTest, failNextVolumeSidecarWrite } from './helpers.js';

const MiB = 1024 * 1024;

const bitmapsOf = async (dir: string, volumeId: string): Promise<string[]> =>
  (await readdir(join(dir, 'volumes', `${volumeId}.cbt`)).catch(() => [] as string[])).filter((n) => n.endsWith('.bitmap')).sort();

describe('a createCheckpoint whose sidecar write fails leaves no bitmap behind (tracker or file)', () => {
  const t = driverPerTest();

  for (const landed of [false, true]) {
    const how = landed ? 'the sidecar renamed but its directory fsync failed' : 'no space for the sidecar';
    it(`attached read-write, ${how}: no new bitmap file, not after flush nor detach, and no checkpoint listed`, async () => {
      const v = await t.driver.createVolume({ size: 4 * MiB });
      const A = await t.driver.changedBlockTracking.createCheckpoint(v.id);
      const a = await t.driver.attach({ kind: 'volume', id: v.id }, 'rw');
      failNextVolumeSidecarWrite(t.driver, landed);
      await expect(t.driver.changedBlockTracking.createCheckpoint(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
      expect(await bitmapsOf(t.dir, v.id)).toEqual([`${A.id}.bitmap`]);
      await a.device.write(MiB, patternBytes(4096, 1));
      await a.device.flush(); // saves the tracker's bitmaps: an orphan one would appear here
      expect(await bitmapsOf(t.dir, v.id)).toEqual([`${A.id}.bitmap`]);
      await t.driver.detach(a.id);
      expect(await bitmapsOf(t.dir, v.id)).toEqual([`${A.id}.bitmap`]);
      expect((await t.driver.changedBlockTracking.listCheckpoints(v.id)).map((c) => c.id)).toEqual([A.id]);
      const r = await t.driver.attach({ kind: 'volume', id: v.id }, 'ro');
      expect(await r.device.extents({ kind: 'changed', since: A.id })).toEqual([{ offset: MiB, length: 64 * 1024 }]);
      await t.driver.detach(r.id);
    });

    it(`detached, ${how}: no bitmap file and no checkpoint listed`, async () => {
      const v = await t.driver.createVolume({ size: 4 * MiB });
      failNextVolumeSidecarWrite(t.driver, landed);
      await expect(t.driver.changedBlockTracking.createCheckpoint(v.id)).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
      expect(await bitmapsOf(t.dir, v.id)).toEqual([]);
      expect(await t.driver.changedBlockTracking.listCheckpoints(v.id)).toEqual([]);
    });
  }
});
