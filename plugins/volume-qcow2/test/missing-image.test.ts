import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, freshDriver, missingQemu } from './helpers.js';

// A volume whose image file is gone (removed outside the driver): no lock on it can be taken, so
// nothing excludes another instance. The sidecar is then left as it is.

const drivers: Qcow2VolumeDriver[] = [];
afterAll(async () => {
  for (const d of drivers) await disposeDriver(d).catch(() => {});
});

describe.skipIf(missingQemu.length > 0)(`a volume whose image file is missing (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('setVolumeMetadata is NOT_FOUND naming the image and changes nothing; deleteVolume still removes the volume', async () => {
    const d = await freshDriver();
    drivers.push(d);
    const v = await d.createVolume({ size: 4 * MiB, metadata: { owner: 'a' } });
    const image = join(d.directory, 'volumes', `${v.id}.qcow2`);
    expect((await d.setVolumeMetadata(v.id, { owner: 'b' })).metadata).toEqual({ owner: 'b' });
    await rm(image);
    const err = await d.setVolumeMetadata(v.id, { owner: 'c' }).then(
      () => undefined,
      (e: { code?: string; message?: string }) => e,
    );
    expect(err?.code).toBe('NOT_FOUND');
    expect(err?.message).toContain(image);
    expect((await d.getVolume(v.id)).metadata).toEqual({ owner: 'b' });
    await d.deleteVolume(v.id);
    expect((await d.listVolumes()).map((x) => x.id)).not.toContain(v.id);
  });
});
