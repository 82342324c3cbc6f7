import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { driverPerTest, failNextVolumeSidecarWrite } from './helpers.js';

const MiB = 1024 * 1024;

describe('a createVolume that fails leaves nothing listed', () => {
  const t = driverPerTest();

  for (const landed of [true, false]) {
    it(`${landed ? 'the sidecar renamed into place but the directory fsync failed' : 'no space for the sidecar'}: the error is raised, no volume is listed, no file stays in volumes/`, async () => {
      failNextVolumeSidecarWrite(t.driver, landed);
      await expect(t.driver.createVolume({ size: 4 * MiB, name: 'broken' })).rejects.toMatchObject({ code: 'UNAVAILABLE', driver: 'file' });
      expect(await t.driver.listVolumes()).toEqual([]);
      expect(await readdir(join(t.dir, 'volumes'))).toEqual([]);
      const v = await t.driver.createVolume({ size: 4 * MiB }); // the directory still works
      expect((await t.driver.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    });
  }
});
