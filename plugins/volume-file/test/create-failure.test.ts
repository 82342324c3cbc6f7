import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileVolumeDriver } from '../src/index.js';
import { failNextVolumeSidecarWrite, removeDir, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

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
