import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileVolumeDriver } from '../src/index.js';
import { driverPerTest } from './helpers.js';

const MiB = 1024 * 1024;
const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code);

// A damaged sidecar (bad JSON: bit rot, a torn write) stops nothing about other volumes, and the
// damaged volume or snapshot itself can be deleted, files and all (file-volume-driver.ts).
describe('damaged sidecars (file driver)', () => {
  const t = driverPerTest();
  const sidecar = (kind: 'volumes' | 'snapshots', id: string) => join(t.dir, kind, `${id}.json`);
  const leftOf = async (kind: 'volumes' | 'snapshots', id: string) => (await readdir(join(t.dir, kind))).filter((n) => n.startsWith(id));

  it("a damaged snapshot sidecar that names no volume stops no other volume's delete or listing, and deleteSnapshot removes it", async () => {
    const v1 = await t.driver.createVolume({ size: MiB });
    const v2 = await t.driver.createVolume({ size: MiB });
    const v3 = await t.driver.createVolume({ size: MiB });
    const kept = await t.driver.createSnapshot(v3.id);
    const s = await t.driver.createSnapshot(v1.id);
    await writeFile(sidecar('snapshots', s.id), '{"format":1,"kind":"snapshot",');
    expect(await t.driver.listSnapshots(v3.id)).toEqual([kept]);
    expect(await t.driver.listSnapshots(v1.id)).toEqual([]);
    await t.driver.deleteVolume(v2.id);
    expect(await codeOf(t.driver.getVolume(v2.id))).toBe('NOT_FOUND');
    await t.driver.deleteSnapshot(s.id);
    expect(await leftOf('snapshots', s.id)).toEqual([]);
    expect(await codeOf(t.driver.deleteSnapshot(s.id))).toBe('NOT_FOUND');
    await t.driver.deleteVolume(v1.id);
  });

  it('a damaged snapshot sidecar that names its volume makes that volume BUSY (naming it), and no other', async () => {
    const v1 = await t.driver.createVolume({ size: MiB });
    const v2 = await t.driver.createVolume({ size: MiB });
    const s = await t.driver.createSnapshot(v1.id);
    const text = await readFile(sidecar('snapshots', s.id), 'utf8');
    await writeFile(sidecar('snapshots', s.id), text.slice(0, text.indexOf(v1.id) + v1.id.length + 1)); // torn after the volume id
    const err = await t.driver.deleteVolume(v1.id).then(() => undefined, (e: { code?: string; message?: string }) => e);
    expect(err?.code).toBe('BUSY');
    expect(err?.message).toContain(s.id);
    await t.driver.deleteVolume(v2.id);
    await t.driver.deleteSnapshot(s.id);
    await t.driver.deleteVolume(v1.id);
    expect(await t.driver.listVolumes()).toEqual([]);
  });

  it("a damaged volume sidecar is listed with status error, every other volume as usual, and deleteVolume removes it and its image", async () => {
    const v1 = await t.driver.createVolume({ size: MiB, name: 'one' });
    const v2 = await t.driver.createVolume({ size: 2 * MiB, name: 'two' });
    await writeFile(sidecar('volumes', v1.id), '{"format":1,"kind":"vol');
    const listed = await t.driver.listVolumes();
    expect(listed.map((v) => [v.id, v.status])).toEqual(expect.arrayContaining([[v1.id, 'error'], [v2.id, 'available']]));
    expect(listed).toHaveLength(2);
    const damaged = await t.driver.getVolume(v1.id);
    expect(damaged).toMatchObject({ id: v1.id, status: 'error', size: MiB, name: '', metadata: {} });
    expect(await codeOf(t.driver.attach({ kind: 'volume', id: v1.id }, 'ro'))).toBe('CORRUPT');
    expect(await t.driver.listSnapshots(v1.id)).toEqual([]);
    await t.driver.deleteVolume(v1.id);
    expect(await leftOf('volumes', v1.id)).toEqual([]);
    expect((await t.driver.listVolumes()).map((v) => v.id)).toEqual([v2.id]);
    const other = new FileVolumeDriver({ directory: t.dir });
    expect(await codeOf(other.getVolume(v1.id))).toBe('NOT_FOUND');
  });

  it('a damaged volume with a readable snapshot is BUSY until the snapshot is deleted', async () => {
    const v = await t.driver.createVolume({ size: MiB });
    const s = await t.driver.createSnapshot(v.id);
    await writeFile(sidecar('volumes', v.id), 'garbage');
    expect((await t.driver.listSnapshots(v.id)).map((x) => x.id)).toEqual([s.id]);
    expect(await codeOf(t.driver.deleteVolume(v.id))).toBe('BUSY');
    await t.driver.deleteSnapshot(s.id);
    await t.driver.deleteVolume(v.id);
    expect(await leftOf('volumes', v.id)).toEqual([]);
  });
});
