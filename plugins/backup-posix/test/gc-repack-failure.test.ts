import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { BackupManager, CairnError, ChunkedBackupService, MemoryVolumeDriver, RepositoryCatalog } from '@cairn/core';
import { allFiles, tempStore } from './helpers.js';

// core's GC over this store: a repack that fails (the store's reads fail part-way) leaves no
// temporary file behind (a part writer left open would keep it fresh, out of every sweep's reach).
// A damaged live chunk does not fail the repack (its pack is kept whole), and leaves none either.
const CHUNK = 256 * 1024;

describe('gc whose repack fails, over the posix store', () => {
  it('leaves no temporary pack file in the repository, whether the repack fails or keeps a damaged pack whole', async () => {
    const store = await tempStore('gc-repack-fail');
    const service = await ChunkedBackupService.open(store, { name: 'repo', workers: 0, init: { chunkSize: CHUNK, packSize: 1024 * 1024, compression: 'none' } });
    const volumes = new MemoryVolumeDriver();
    const manager = new BackupManager({ volumes, targets: { repo: service }, catalog: new RepositoryCatalog(service.repository) });
    const v = await volumes.createVolume({ size: 8 * CHUNK, name: 'v' });
    const a = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    for (let i = 0; i < 8; i++) await a.device.write(i * CHUNK, Buffer.alloc(CHUNK, i + 1));
    await volumes.detach(a.id);
    const first = await manager.backup({ volumeId: v.id });
    const b = await volumes.attach({ kind: 'volume', id: v.id }, 'rw');
    for (const i of [1, 4, 7]) await b.device.write(i * CHUNK, Buffer.alloc(CHUNK, 0x40 + i));
    await volumes.detach(b.id);
    const second = await manager.backup({ volumeId: v.id });
    await manager.deleteBackup(first.id);
    // Reads of a second distinct pack fail: the repack has copied the first pack's live chunks
    // into the pack it is writing by then.
    const realGetInto = store.getInto.bind(store);
    const read = new Set<string>();
    store.getInto = async (key, range, into, options) => {
      if (key.startsWith('packs/')) {
        read.add(key);
        if (read.size > 1) throw new CairnError('UNAVAILABLE', `get ${key}: connection reset`);
      }
      return realGetInto(key, range, into, options);
    };

    await expect(service.gc({ graceMs: 0 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(read.size).toBeGreaterThan(1);
    expect((await allFiles(store.directory)).filter((f) => f.includes('~'))).toEqual([]);
    store.getInto = realGetInto;

    // Damage the live chunk stored last in the packs the repack copies from: GC keeps that pack
    // whole and completes, with no temporary file left either.
    const repo = service.repository;
    const ids = (await (await repo.readManifest(second.id)).chunks.slice()).filter((c): c is string => c !== null);
    await repo.index.refresh();
    const partly = ids.map((id) => repo.index.get(id)!).filter((l) => !repo.index.packs().get(l.pack)!.every((e) => ids.includes(e.id)));
    const last = partly.sort((x, y) => (x.pack === y.pack ? x.offset - y.offset : 0)).at(-1)!;
    const pack = await store.get(`packs/${last.pack}`);
    pack[last.offset + 100]! ^= 0x40;
    await store.put(`packs/${last.pack}`, pack);
    const report = await service.gc({ graceMs: 0 });
    expect(report).toMatchObject({ chunksUnreadable: 1, packsLeftUnreadable: 1 });
    expect(await store.get(`packs/${last.pack}`)).toEqual(pack);
    expect((await allFiles(store.directory)).filter((f) => f.includes('~'))).toEqual([]);
    await service.close();
    await rm(store.directory, { recursive: true, force: true });
  });
});
