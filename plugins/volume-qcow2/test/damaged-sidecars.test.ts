import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import { MiB, disposeDriver, freshDriver, missingQemu } from './helpers.js';

const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code);

// A damaged sidecar (bad JSON: bit rot, a torn write) stops nothing about other volumes, and the
// damaged volume or snapshot copy itself can be deleted, image and all (qcow2-volume-driver.ts).
describe.skipIf(missingQemu.length > 0)(`damaged sidecars (qcow2; needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  let d: Qcow2VolumeDriver;
  afterEach(async () => {
    await disposeDriver(d).catch(() => {});
  });
  const sidecar = (kind: 'volumes' | 'snapshots', id: string) => join(d.directory, kind, `${id}.json`);
  const leftOf = async (kind: 'volumes' | 'snapshots', id: string) => (await readdir(join(d.directory, kind))).filter((n) => n.startsWith(id));

  it("a damaged snapshot sidecar that names no volume stops no other volume's delete or listing, and deleteSnapshot removes it", async () => {
    d = await freshDriver();
    const v1 = await d.createVolume({ size: MiB });
    const v2 = await d.createVolume({ size: MiB });
    const v3 = await d.createVolume({ size: MiB });
    const kept = await d.createSnapshot(v3.id);
    const s = await d.createSnapshot(v1.id);
    await writeFile(sidecar('snapshots', s.id), '{"format":1,"kind":"snapshot",');
    expect(await d.listSnapshots(v3.id)).toEqual([kept]);
    expect(await d.listSnapshots(v1.id)).toEqual([]);
    await d.deleteVolume(v2.id);
    expect(await codeOf(d.getVolume(v2.id))).toBe('NOT_FOUND');
    await d.deleteSnapshot(s.id);
    expect(await leftOf('snapshots', s.id)).toEqual([]);
    expect(await codeOf(d.deleteSnapshot(s.id))).toBe('NOT_FOUND');
    await d.deleteVolume(v1.id);
  });

  it('a damaged snapshot sidecar that names its volume makes that volume BUSY (naming it), and no other', async () => {
    d = await freshDriver();
    const v1 = await d.createVolume({ size: MiB });
    const v2 = await d.createVolume({ size: MiB });
    const s = await d.createSnapshot(v1.id);
    const text = await readFile(sidecar('snapshots', s.id), 'utf8');
    await writeFile(sidecar('snapshots', s.id), text.slice(0, text.indexOf(v1.id) + v1.id.length + 1)); // torn after the volume id
    const err = await d.deleteVolume(v1.id).then(() => undefined, (e: { code?: string; message?: string }) => e);
    expect(err?.code).toBe('BUSY');
    expect(err?.message).toContain(s.id);
    await d.deleteVolume(v2.id);
    await d.deleteSnapshot(s.id);
    expect(await leftOf('snapshots', s.id)).toEqual([]);
    await d.deleteVolume(v1.id);
    expect(await d.listVolumes()).toEqual([]);
  });

  it('a damaged volume sidecar is listed with status error, every other volume as usual, and deleteVolume removes it and its image', async () => {
    d = await freshDriver();
    const v1 = await d.createVolume({ size: MiB, name: 'one' });
    const v2 = await d.createVolume({ size: 2 * MiB, name: 'two' });
    await writeFile(sidecar('volumes', v1.id), '{"format":1,"kind":"vol');
    const listed = await d.listVolumes();
    expect(listed.map((v) => [v.id, v.status])).toEqual(expect.arrayContaining([[v1.id, 'error'], [v2.id, 'available']]));
    expect(listed).toHaveLength(2);
    expect(await d.getVolume(v1.id)).toMatchObject({ id: v1.id, status: 'error', size: MiB, name: '', metadata: {} });
    expect(await codeOf(d.attach({ kind: 'volume', id: v1.id }, 'ro'))).toBe('CORRUPT');
    expect(await d.listSnapshots(v1.id)).toEqual([]);
    await d.deleteVolume(v1.id);
    expect(await leftOf('volumes', v1.id)).toEqual([]);
    expect((await d.listVolumes()).map((v) => v.id)).toEqual([v2.id]);
  });

  it('a damaged volume with a readable snapshot copy is BUSY until the copy is deleted', async () => {
    d = await freshDriver();
    const v = await d.createVolume({ size: MiB });
    const s = await d.createSnapshot(v.id);
    await writeFile(sidecar('volumes', v.id), 'garbage');
    expect((await d.listSnapshots(v.id)).map((x) => x.id)).toEqual([s.id]);
    expect(await codeOf(d.deleteVolume(v.id))).toBe('BUSY');
    await d.deleteSnapshot(s.id);
    await d.deleteVolume(v.id);
    expect(await leftOf('volumes', v.id)).toEqual([]);
  });
});
