import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SidecarStore, toDamagedVolume } from '../src/drivers/sidecar-store.js';
import { readSnapshotSidecar, readVolumeSidecar, writeSidecar, type SnapshotSidecar, type VolumeSidecar } from '../src/drivers/sidecar-records.js';

// Contract (sidecar-store.ts): the tolerant listings and lookups report a damaged sidecar beside
// the readable records — never CORRUPT for the lot — and tell, of a damaged snapshot sidecar, the
// volume its bytes name when they name exactly one.

const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';
const S1 = '33333333-3333-4333-8333-333333333333';
const S2 = '44444444-4444-4444-8444-444444444444';
const S3 = '55555555-5555-4555-8555-555555555555';
const S4 = '66666666-6666-4666-8666-666666666666';
const S5 = '77777777-7777-4777-8777-777777777777';

const volumeRecord = (id: string, createdAt: string): VolumeSidecar => ({ format: 1, kind: 'volume', id, name: 'v', size: 512, createdAt, metadata: {}, checkpoints: [] });
const snapshotRecord = (id: string, volumeId: string): SnapshotSidecar => ({ format: 1, kind: 'snapshot', id, volumeId, name: '', size: 512, createdAt: '2024-01-01T00:00:00.000Z', checkpoints: [] });

describe('SidecarStore: tolerant listings of damaged sidecars', () => {
  let root: string;
  let store: SidecarStore<VolumeSidecar, SnapshotSidecar>;
  const path = (kind: 'volumes' | 'snapshots', id: string) => join(root, kind, `${id}.json`);
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-sidecar-listing-'));
    store = new SidecarStore<VolumeSidecar, SnapshotSidecar>({
      driver: 'test',
      dir: (kind) => join(root, kind === 'volume' ? 'volumes' : 'snapshots'),
      readVolume: (p, driver) => readVolumeSidecar(p, driver),
      readSnapshot: (p, driver) => readSnapshotSidecar(p, driver),
    });
    await store.init();
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('volumeListing lists the readable volumes and reports a damaged one, where volumes() fails CORRUPT', async () => {
    await writeSidecar(path('volumes', A), volumeRecord(A, '2024-01-02T00:00:00.000Z'));
    await writeFile(path('volumes', B), '{"format":1,"kind":"vol');
    await expect(store.volumes()).rejects.toMatchObject({ code: 'CORRUPT' });
    const { records, damaged } = await store.volumeListing();
    expect(records.map((r) => r.id)).toEqual([A]);
    expect(damaged.map((d) => [d.kind, d.id, d.path, d.error.code])).toEqual([['volume', B, path('volumes', B), 'CORRUPT']]);
    expect(Number.isNaN(Date.parse(damaged[0]!.modifiedAt))).toBe(false);
    const found = await store.volumeOrDamaged(B);
    expect(found.damaged?.id).toBe(B);
    expect((await store.volumeOrDamaged(A)).record?.id).toBe(A);
    await expect(store.volumeOrDamaged(S5)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(toDamagedVolume(found.damaged!, 4096)).toEqual({ id: B, name: '', size: 4096, status: 'error', createdAt: found.damaged!.modifiedAt, metadata: {} });
    expect(toDamagedVolume(found.damaged!, undefined).size).toBe(0);
  });

  it('snapshotListing tells the volume a damaged snapshot sidecar names, and none when it names none or several', async () => {
    await writeSidecar(path('snapshots', S1), snapshotRecord(S1, A));
    await writeFile(path('snapshots', S2), JSON.stringify({ ...snapshotRecord(S2, B), format: 9 })); // a newer format: parses
    await writeFile(path('snapshots', S3), `{"format":1,"kind":"snapshot","id":"${S3}","volumeId" : "${A}","na`); // torn
    await writeFile(path('snapshots', S4), '{"format":1,"kind":"snapshot",'); // torn before the volume
    await writeFile(path('snapshots', S5), `{"volumeId":"${A}","volumeId":"${B}",`); // names two
    await expect(store.snapshots()).rejects.toMatchObject({ code: 'CORRUPT' });
    const { records, damaged } = await store.snapshotListing();
    expect(records.map((r) => r.id)).toEqual([S1]);
    const named = Object.fromEntries(damaged.map((d) => [d.id, d.volumeId ?? null]));
    expect(named).toEqual({ [S2]: B, [S3]: A, [S4]: null, [S5]: null });
    expect((await store.snapshotOrDamaged(S3)).damaged?.volumeId).toBe(A);
  });

  it('a sidecar that is a directory is damaged too, and names no volume', async () => {
    const S6 = '88888888-8888-4888-8888-888888888888';
    await mkdir(path('snapshots', S6));
    const found = await store.snapshotOrDamaged(S6);
    expect(found.damaged?.error.code).toBe('CORRUPT');
    expect(found.damaged?.volumeId).toBeUndefined();
  });
});
