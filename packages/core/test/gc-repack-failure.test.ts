/**
 * A repack that fails (a live chunk it must copy is damaged, the store fails) fails GC and
 * deletes nothing; it must also leave nothing open: the pack it was streaming is aborted, as a
 * backup's is (PackWriter.abandon), not left to a store that keeps a live writer's temporary
 * file (the posix store refreshes its mtime, so no sweep removes it while the process lives).
 */
import { describe, expect, it } from 'vitest';
import { chunkedRig, CountingStore, filledVolume, keys } from './helpers.js';

const CHUNK = 256 * 1024; // the rig's chunk size

describe('gc whose repack fails', () => {
  it('fails with CORRUPT, deletes nothing and leaves no pack being written', async () => {
    const store = new CountingStore('mem');
    const { service, manager, volumes } = await chunkedRig(store, { init: { compression: 'none' } });
    const repo = service.repository;
    const v = await filledVolume(volumes, 8 * CHUNK, 91);
    const first = await manager.backup({ volumeId: v.id });
    // A third of each pack's chunks change: once the first backup is gone, every pack is a third dead.
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    for (const i of [1, 4, 7]) await a.device.write(i * CHUNK, Buffer.alloc(CHUNK, 0x11 + i));
    await volumes.detach(a.id);
    const second = await manager.backup({ volumeId: v.id });
    await manager.deleteBackup(first.id);

    // The live chunk stored last is damaged: the repack copies others first, then fails on it.
    const m = await repo.readManifest(second.id);
    const ids = (await m.chunks.slice()).filter((c): c is string => c !== null);
    await repo.index.refresh();
    const locs = ids.map((id) => repo.index.get(id)!).filter((l) => !repo.index.packs().get(l.pack)!.every((e) => ids.includes(e.id)));
    const last = locs.sort((x, y) => (x.pack === y.pack ? x.offset - y.offset : 0)).at(-1)!;
    const key = `packs/${last.pack}`;
    const pack = await store.get(key);
    pack[last.offset + Math.floor(last.length / 2)]! ^= 0x40;
    await store.put(key, pack);

    const packsBefore = await keys(store, 'packs/');
    const indexesBefore = await keys(store, 'index/');
    const openedBefore = store.opened;
    await expect(service.gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'CORRUPT' });
    expect(store.opened).toBeGreaterThan(openedBefore); // the repack had begun a pack
    expect(store.ended).toBe(store.opened); // …and ended it
    expect((await keys(store, 'packs/')).filter((k) => packsBefore.includes(k))).toEqual(packsBefore);
    expect((await keys(store, 'index/')).filter((k) => indexesBefore.includes(k))).toEqual(indexesBefore);
    await service.close();
  });
});
