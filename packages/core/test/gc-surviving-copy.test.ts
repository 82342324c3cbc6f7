/**
 * A chunk may be stored in more than one pack (two writers raced; docs/repository-format.md,
 * "Packs and indexes"): any copy is valid. When the index names a pack the store no longer
 * holds, GC takes a copy elsewhere as the live one (garbage-collector.ts): it must then never
 * repack that copy away.
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore } from '../src/index.js';
import { PackWriter } from '../src/repository/pack-writer.js';
import { ChunkCodec } from '../src/repository/codec.js';
import { readPackTrailer } from '../src/repository/pack-trailer.js';
import { chunkedRig, contents, filledVolume, keys } from './helpers.js';

const CHUNK = 256 * 1024; // the rig's chunk size

describe('gc and a chunk whose first pack is gone', () => {
  it('repacks the surviving copy instead of deleting it: the backup still restores byte-exact', async () => {
    const store = new MemoryObjectStore('mem');
    const { service, manager, volumes } = await chunkedRig(store);
    const repo = service.repository;
    const v = await filledVolume(volumes, CHUNK, 81); // one chunk
    const b = await manager.backup({ volumeId: v.id });
    const [first] = await keys(store, 'packs/');
    const data = await contents(volumes, v.id);
    const id = repo.codec.chunkId(data);

    // A second copy, as a racing writer leaves it, in a pack with a chunk no backup references.
    const writer = new PackWriter(store, repo.codec, repo.index, repo.config.packSize, ChunkCodec.maxEncodedLength(CHUNK));
    await writer.add(id, repo.codec.encode(data, 'none', id), data.length);
    const dead = Buffer.alloc(CHUNK, 0x33);
    const deadId = repo.codec.chunkId(dead);
    await writer.add(deadId, repo.codec.encode(dead, 'none', deadId), dead.length);
    await writer.finish();
    expect(repo.index.get(id)?.pack).toBe(first!.slice('packs/'.length)); // readers use the first copy

    await store.delete(first!); // the first copy is lost
    await service.gc({ graceMs: 0 });

    // Some pack still holds the chunk, and the backup restores.
    const holders: string[] = [];
    for (const k of await keys(store, 'packs/')) {
      const entries = await readPackTrailer(store, repo.codec, k.slice('packs/'.length));
      if (entries.some((e) => e.id === id)) holders.push(k);
    }
    expect(holders).toHaveLength(1);
    expect((await service.verify()).problems).toEqual([]);
    const restored = await manager.restore({ backupId: b.id, newVolume: { name: 'r' } });
    expect((await contents(volumes, restored.volume.id)).equals(data)).toBe(true);
    await service.close();
  });
});
