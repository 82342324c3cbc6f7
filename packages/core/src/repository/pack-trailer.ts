import type { ObjectStore } from '../contracts/object-store.js';
import { CairnError } from '../errors.js';
import type { ChunkCodec } from './codec.js';
import { decodeDocument } from './codec.js';
import { indexLabel, validTuple } from './chunk-index.js';
import { Keys, PACK_MAGIC, PACK_TRAILER, type IndexEntry, type PackIndexDoc } from './format.js';

/**
 * The entries of a pack as its own trailer lists them (`… | sealed index | u32 BE length |
 * PACK_MAGIC`), read with two ranged gets. For packs no index object names (a writer died, or an
 * older one named its packs late): GC reads them to see whether they hold chunks a backup needs.
 * `NOT_FOUND` when the pack is gone; `CORRUPT` when its trailer or index is damaged, an entry
 * among them: one an index object may not hold (validTuple), which GC would otherwise copy into
 * an index object that every later reader calls damaged.
 */
export async function readPackTrailer(store: ObjectStore, codec: ChunkCodec, packId: string): Promise<IndexEntry[]> {
  const key = Keys.pack(packId);
  const { size } = await store.head(key);
  const damaged = (why: string): CairnError => new CairnError('CORRUPT', `pack ${packId} has a damaged trailer: ${why}`, { details: { pack: packId } });
  if (size < PACK_TRAILER) throw damaged(`${size} bytes`);
  const trailer = await store.get(key, { offset: size - PACK_TRAILER, length: PACK_TRAILER });
  if (!trailer.subarray(4).equals(PACK_MAGIC)) throw damaged('no pack magic');
  const length = trailer.readUInt32BE(0);
  if (length > size - PACK_TRAILER) throw damaged(`an index of ${length} bytes`);
  const doc = decodeDocument<PackIndexDoc>(codec, await store.get(key, { offset: size - PACK_TRAILER - length, length }), indexLabel(packId));
  if (doc?.version !== 1 || !Array.isArray(doc.blobs)) throw damaged('not a pack index');
  const entries: IndexEntry[] = [];
  for (const t of doc.blobs) {
    if (!validTuple(t)) throw damaged('a malformed entry');
    entries.push({ id: t[0], offset: t[1], length: t[2], rawLength: t[3] });
  }
  return entries;
}
