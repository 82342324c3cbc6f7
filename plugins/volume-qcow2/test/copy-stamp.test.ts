import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, missingQemu, pattern } from './helpers.js';
import { driversOn } from './drivers-on.js';
import { writeInPlace } from './outside-write.js';
import { changedSince as changed, writeVolume as write } from './volume-io.js';

/*
 * Snapshot copies carry an image stamp as volumes do (volume-stamp.ts): a copy written outside the
 * driver (a data cluster overwritten in place, which no bitmap records) must not answer "changed
 * since" from its bitmaps, or the incremental taken from it would miss that write.
 */

const SIZE = 8 * MiB;
const G = 64 * 1024;
const driverOn = driversOn();

const copyPath = (d: Qcow2VolumeDriver, id: string): string => join(d.directory, 'snapshots', `${id}.qcow2`);
const copySidecar = async (d: Qcow2VolumeDriver, id: string): Promise<{ checkpoints: { consistent: boolean }[]; imageStamp?: { racy?: true } }> =>
  JSON.parse(await readFile(join(d.directory, 'snapshots', `${id}.json`), 'utf8'));

/** A volume with data everywhere, a checkpoint, one write after it, and a snapshot copy of it (made closed). */
async function copyWithCheckpoint(d: Qcow2VolumeDriver): Promise<{ copy: string; cp: string }> {
  const v = await d.createVolume({ size: SIZE });
  await write(d, v.id, 0, pattern(SIZE, 1));
  const cp = await d.changedBlockTracking.createCheckpoint(v.id);
  await write(d, v.id, MiB, pattern(G, 2));
  const s = await d.createSnapshot(v.id);
  return { copy: s.id, cp: cp.id };
}

describe.skipIf(missingQemu.length > 0)(`writes to a snapshot copy outside the driver (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('an untouched copy keeps answering from its bitmaps, attach after attach and in a new instance: its own opens do not change its stamp', async () => {
    const d = await driverOn();
    const { copy, cp } = await copyWithCheckpoint(d);
    expect((await copySidecar(d, copy)).imageStamp).toBeDefined();
    for (let i = 0; i < 2; i++) expect(await changed(d, { kind: 'snapshot', id: copy }, cp)).toEqual([{ offset: MiB, length: G }]);
    await d.close();
    const d2 = await driverOn(d.directory);
    expect(await changed(d2, { kind: 'snapshot', id: copy }, cp)).toEqual([{ offset: MiB, length: G }]);
    await d2.close();
  });

  it('a data cluster of the copy overwritten in place while detached: changed since the checkpoint is NOT_FOUND, recorded in its sidecar, in a new instance too', async () => {
    const d = await driverOn();
    const { copy, cp } = await copyWithCheckpoint(d);
    await writeInPlace(copyPath(d, copy), 6 * MiB, pattern(4096, 9));
    const a = await d.attach({ kind: 'snapshot', id: copy }, 'ro');
    try {
      expect(Buffer.from(await a.device.read(6 * MiB, 4096)).equals(pattern(4096, 9))).toBe(true); // the copy serves the outside write
      await expect(a.device.extents({ kind: 'changed', since: cp })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      await d.detach(a.id);
    }
    const sidecar = await copySidecar(d, copy);
    expect(sidecar.checkpoints.map((c) => c.consistent)).toEqual([false]);
    expect(sidecar.imageStamp?.racy).toBe(true);
    await d.close();
    const d2 = await driverOn(d.directory);
    await expect(changed(d2, { kind: 'snapshot', id: copy }, cp)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await d2.deleteSnapshot(copy);
    await d2.close();
  });

  it('a data cluster of the copy overwritten in place while it is attached: the next changed-since query is NOT_FOUND', async () => {
    const d = await driverOn();
    const { copy, cp } = await copyWithCheckpoint(d);
    const a = await d.attach({ kind: 'snapshot', id: copy }, 'ro');
    try {
      expect(await a.device.extents({ kind: 'changed', since: cp })).toEqual([{ offset: MiB, length: G }]);
      await writeInPlace(copyPath(d, copy), 6 * MiB, pattern(4096, 9));
      await expect(a.device.extents({ kind: 'changed', since: cp })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      await d.detach(a.id);
    }
    await expect(changed(d, { kind: 'snapshot', id: copy }, cp)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await d.close();
  });
});
