/**
 * GC reads the trailers of packs no index object names when a backup references chunks the index
 * lacks (docs/repository-format.md, Garbage collection, step 5). A trailer is untrusted: one
 * whose entries are not what an index object may hold must be treated as unreadable (`CORRUPT`),
 * never copied into a new index object.
 */
import { describe, expect, it } from 'vitest';
import { MemoryObjectStore } from '../src/index.js';
import { ChunkIndex, indexLabel } from '../src/repository/chunk-index.js';
import { ChunkCodec, encodeDocument } from '../src/repository/codec.js';
import { PACK_MAGIC, PACK_TRAILER } from '../src/repository/format.js';
import { readPackTrailer } from '../src/repository/pack-trailer.js';
import { MiB, chunkedRig, filledVolume, keys } from './helpers.js';

/** Rewrites pack `key`'s trailer with `extra` blob tuples appended to its own index. */
async function appendToTrailer(store: MemoryObjectStore, key: string, extra: unknown[][]): Promise<void> {
  const codec = new ChunkCodec(undefined, undefined);
  const packId = key.slice('packs/'.length);
  const pack = await store.get(key);
  const indexLength = pack.readUInt32BE(pack.length - PACK_TRAILER);
  const body = pack.subarray(0, pack.length - PACK_TRAILER - indexLength);
  const entries = await readPackTrailer(store, codec, packId);
  const blobs = [...entries.map((e) => [e.id, e.offset, e.length, e.rawLength]), ...extra];
  const sealed = encodeDocument(codec, { version: 1, blobs }, indexLabel(packId));
  const trailer = Buffer.alloc(PACK_TRAILER);
  trailer.writeUInt32BE(sealed.length, 0);
  PACK_MAGIC.copy(trailer, 4);
  await store.put(key, Buffer.concat([body, sealed, trailer]));
}

describe('gc and an unnamed pack whose trailer holds an entry no index may hold', () => {
  it('keeps the pack as unreadable, stores no index object it would later call damaged, and adopts the others', async () => {
    const store = new MemoryObjectStore('mem');
    const { service, manager, volumes } = await chunkedRig(store);
    const v = await filledVolume(volumes, 4 * MiB, 71);
    await manager.backup({ volumeId: v.id });
    await service.close();
    // As a writer that died before naming its packs leaves them; one trailer then damaged so
    // that it still decodes (an unencrypted repository): a chunk id in capitals.
    for (const k of await keys(store, 'index/')) await store.delete(k);
    const packs = await keys(store, 'packs/');
    await appendToTrailer(store, packs[0]!, [['AB'.repeat(32), 0, 10, 10]]);

    const { service: s2 } = await chunkedRig(store, { volumes });
    const report = await s2.gc({ graceMs: 0 });
    expect(report).toMatchObject({ packsAdopted: packs.length - 1, packsDeleted: 0 });
    expect(await keys(store, 'packs/')).toEqual(packs); // the damaged one kept: it may hold what is missing
    const fresh = new ChunkIndex(store, s2.repository.codec);
    await fresh.refresh();
    expect([...fresh.damaged]).toEqual([]);
    expect(await s2.gc({ graceMs: 0 })).toMatchObject({ packsDeleted: 0 }); // GC still runs
    await s2.close();
  });

  it('readPackTrailer calls such a trailer CORRUPT', async () => {
    const store = new MemoryObjectStore('mem');
    const { service, manager, volumes } = await chunkedRig(store);
    const v = await filledVolume(volumes, 2 * MiB, 72);
    await manager.backup({ volumeId: v.id });
    const [pack] = await keys(store, 'packs/');
    const packId = pack!.slice('packs/'.length);
    await appendToTrailer(store, pack!, [['0'.repeat(64), 2 ** 32, 10, 10]]);
    await expect(readPackTrailer(store, service.repository.codec, packId)).rejects.toMatchObject({ code: 'CORRUPT', details: { pack: packId } });
    // A trailer whose document is JSON but no object at all.
    const pack2 = await store.get(pack!);
    const body = pack2.subarray(0, pack2.length - PACK_TRAILER - pack2.readUInt32BE(pack2.length - PACK_TRAILER));
    const sealed = encodeDocument(service.repository.codec, null, indexLabel(packId));
    const trailer = Buffer.alloc(PACK_TRAILER);
    trailer.writeUInt32BE(sealed.length, 0);
    PACK_MAGIC.copy(trailer, 4);
    await store.put(pack!, Buffer.concat([body, sealed, trailer]));
    await expect(readPackTrailer(store, service.repository.codec, packId)).rejects.toMatchObject({ code: 'CORRUPT', details: { pack: packId } });
    await service.close();
  });
});
