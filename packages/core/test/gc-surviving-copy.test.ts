/**
 * A chunk may be stored in more than one pack (two writers raced; docs/repository-format.md,
 * "Packs and indexes"): any copy is valid. When the index names a pack the store no longer
 * holds, GC takes a copy elsewhere as the live one (garbage-collector.ts): it must then never
 * repack that copy away, nor leave an index object naming the lost pack (any other process would
 * resolve the chunk to it first).
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore } from '../src/index.js';
import { PackWriter } from '../src/repository/pack-writer.js';
import { ChunkCodec } from '../src/repository/codec.js';
import { readPackTrailer } from '../src/repository/pack-trailer.js';
import { chunkedRig, contents, filledVolume, keys } from './helpers.js';
import { backUp, openRepo, pattern, restored } from './buffer-backups.js';

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

describe('gc and a pack the index names but the store lacks', () => {
  it('rewrites the index objects naming it: another process then finds the surviving copy, verifies clean and restores byte-exact', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    const repo = service.repository;
    const data = pattern(CHUNK, 82);
    const b = await backUp(service, 'full', data);
    const [first] = await keys(store, 'packs/');
    const id = repo.codec.chunkId(data);
    // A second copy, as a racing writer leaves it, in a pack of its own.
    const writer = new PackWriter(store, repo.codec, repo.index, repo.config.packSize, ChunkCodec.maxEncodedLength(CHUNK));
    await writer.add(id, repo.codec.encode(data, 'none', id), data.length);
    await writer.finish();

    await store.delete(first!); // the first copy is lost
    await service.gc({ graceMs: 0 });
    await service.close();

    // No index object names the lost pack any more: every process resolves the chunk to the copy.
    const other = await openRepo(store);
    await other.repository.index.refresh();
    expect(other.repository.index.indexedPacks().has(first!.slice('packs/'.length))).toBe(false);
    expect((await other.verify()).problems).toEqual([]);
    expect((await restored(other, b)).equals(data)).toBe(true);
    await other.close();
  });

  it('a dry run rewrites nothing', async () => {
    const store = new MemoryObjectStore('mem');
    const service = await openRepo(store);
    await backUp(service, 'full', pattern(CHUNK, 83));
    const [first] = await keys(store, 'packs/');
    await store.delete(first!);
    const indexes = await keys(store, 'index/');
    await service.gc({ graceMs: 0, dryRun: true });
    expect(await keys(store, 'index/')).toEqual(indexes);
    await service.close();
  });
});
