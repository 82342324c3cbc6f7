import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { noSpaceErrno } from '@cairn/core';
import { fillFileSystem, TmpfsMounts } from '@cairn/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, pattern } from './helpers.js';
import { writeVolume as write } from './volume-io.js';

/*
 * qemu-img runs that fail for a full file system (create, the snapshot copy's convert) are
 * UNAVAILABLE with details.errno and details.file, as the driver's own writes on a full disk (core
 * maps ENOSPC to UNAVAILABLE), not INTERNAL; and they leave no image, copy or sidecar behind.
 * On a real full disk: a tmpfs mount (we are root here).
 */
const tmpfs = new TmpfsMounts('cairn-qcow2-full-');

const listing = async (dir: string): Promise<string[]> => (await readdir(dir)).filter((n) => !n.startsWith('.')).sort();

describe.skipIf(missingQemu.length > 0)(`qemu-img on a full file system (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  let small: string | undefined;
  beforeAll(() => {
    small = tmpfs.mount('size=6m,mode=0700');
    if (!small) console.warn(`full-disk tests skipped: cannot mount a tmpfs (${tmpfs.error})`);
  });
  afterAll(() => tmpfs.unmountAll());

  it('createVolume and a snapshot copy fail UNAVAILABLE (errno ENOSPC, the file named), leaving nothing half-made', async (ctx) => {
    if (!small) return ctx.skip();
    const dir = join(small, 'volumes-dir');
    const d = new Qcow2VolumeDriver({ directory: dir });
    try {
      const v = await d.createVolume({ size: 8 * MiB });
      await write(d, v.id, 0, pattern(2 * MiB, 1)); // the copy needs room for these clusters
      const volumesBefore = await listing(join(dir, 'volumes'));
      await fillFileSystem(small);

      const created = await d.createVolume({ size: 8 * MiB }).catch((e: unknown) => e);
      expect(created).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
      expect(noSpaceErrno(created)).toBe('ENOSPC');
      const file = (created as { details: { file: string } }).details.file;
      expect(file.startsWith(join(dir, 'volumes') + '/') && file.endsWith('.qcow2')).toBe(true);
      expect((created as Error).message).toContain(file);
      expect(await listing(join(dir, 'volumes'))).toEqual(volumesBefore);

      const copied = await d.createSnapshot(v.id).catch((e: unknown) => e);
      expect(copied).toMatchObject({ code: 'UNAVAILABLE', details: { errno: 'ENOSPC' } });
      expect((copied as { details: { file: string } }).details.file.startsWith(join(dir, 'snapshots') + '/')).toBe(true);
      expect(await listing(join(dir, 'snapshots'))).toEqual([]);
      expect(await d.listSnapshots(v.id)).toEqual([]);
      expect((await d.listVolumes()).map((x) => x.id)).toEqual([v.id]);
    } finally {
      await d.close();
    }
  });
});
