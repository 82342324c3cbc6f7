/**
 * In an encrypted repository every sealed blob is bound to its place (associated data: a chunk's
 * id, a document's label), so someone who can write the store but holds no key cannot move a
 * valid sealed object to another place without every reader calling it CORRUPT.
 */
import { describe, expect, it } from 'vitest';
import { RepositoryCatalog } from '../src/index.js';
import { chunkedRig, filledVolume } from './helpers.js';

async function twoBackups() {
  const rig = await chunkedRig(undefined, { passphrase: 'pw', init: { compression: 'none' } });
  const [v1, v2] = [await filledVolume(rig.volumes, 1024 * 1024, 81), await filledVolume(rig.volumes, 1024 * 1024, 82)];
  const a = await rig.manager.backup({ volumeId: v1.id });
  const b = await rig.manager.backup({ volumeId: v2.id });
  return { ...rig, a, b };
}

describe('an encrypted repository: sealed objects moved to another place', () => {
  it("a pack blob overwritten with another chunk's sealed blob (same length) is CORRUPT for verify and restore", async () => {
    const { store, service, manager, a, b } = await twoBackups();
    const repo = service.repository;
    const idA = (await (await repo.readManifest(a.id)).chunks.get(0))!;
    const idB = (await (await repo.readManifest(b.id)).chunks.get(0))!;
    const [at, to] = [repo.index.get(idA)!, repo.index.get(idB)!];
    expect(at.length).toBe(to.length);
    const source = await store.get(`packs/${at.pack}`);
    const pack = Buffer.from(await store.get(`packs/${to.pack}`));
    source.copy(pack, to.offset, at.offset, at.offset + at.length);
    await store.put(`packs/${to.pack}`, pack);
    expect((await manager.verify(b.id)).problems).toEqual([expect.objectContaining({ backupId: b.id, code: 'CORRUPT' })]);
    await expect(manager.restore({ backupId: b.id, newVolume: {} })).rejects.toMatchObject({ code: 'CORRUPT' });
    expect((await manager.verify(a.id)).problems).toEqual([]);
    await service.close();
  });

  it("a backup's manifest replaced by another backup's sealed manifest is CORRUPT", async () => {
    const { store, service, a, b } = await twoBackups();
    await store.put(`manifests/${b.id}`, await store.get(`manifests/${a.id}`));
    await expect(service.repository.readManifest(b.id)).rejects.toMatchObject({ code: 'CORRUPT' });
    expect((await service.repository.readManifest(a.id)).backupId).toBe(a.id);
    await service.close();
  });

  it("a catalog record replaced by another backup's sealed record is CORRUPT", async () => {
    const { store, service, a, b } = await twoBackups();
    await store.put(`catalog/backups/${b.id}`, await store.get(`catalog/backups/${a.id}`));
    const catalog = new RepositoryCatalog(service.repository);
    await expect(catalog.getBackup(b.id)).rejects.toMatchObject({ code: 'CORRUPT' });
    expect((await catalog.getBackup(a.id)).id).toBe(a.id);
    await service.close();
  });
});
