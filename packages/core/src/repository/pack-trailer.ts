import type { ObjectStore } from '../contracts/object-store.js';
import { CairnError, throwIfAborted } from '../errors.js';
import { untilAborted } from '../util/until-aborted.js';
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
 * an index object that every later reader calls damaged. `signal` goes to the head and both gets
 * (ObjectStore CallOptions), and ends the call with `CANCELLED` at once when it aborts, whatever
 * the store does (a call in flight goes on, unawaited).
 */
export async function readPackTrailer(store: ObjectStore, codec: ChunkCodec, packId: string, signal?: AbortSignal): Promise<IndexEntry[]> {
  const key = Keys.pack(packId);
  throwIfAborted(signal);
  const { size } = await untilAborted(store.head(key, { signal }), signal);
  const damaged = (why: string): CairnError => new CairnError('CORRUPT', `pack ${packId} has a damaged trailer: ${why}`, { details: { pack: packId } });
  if (size < PACK_TRAILER) throw damaged(`${size} bytes`);
  const trailer = await untilAborted(store.get(key, { offset: size - PACK_TRAILER, length: PACK_TRAILER }, { signal }), signal);
  if (!trailer.subarray(4).equals(PACK_MAGIC)) throw damaged('no pack magic');
  const length = trailer.readUInt32BE(0);
  if (length > size - PACK_TRAILER) throw damaged(`an index of ${length} bytes`);
  const doc = decodeDocument<PackIndexDoc>(codec, await untilAborted(store.get(key, { offset: size - PACK_TRAILER - length, length }, { signal }), signal), indexLabel(packId));
  if (doc?.version !== 1 || !Array.isArray(doc.blobs)) throw damaged('not a pack index');
  const entries: IndexEntry[] = [];
  for (const t of doc.blobs) {
    if (!validTuple(t)) throw damaged('a malformed entry');
    entries.push({ id: t[0], offset: t[1], length: t[2], rawLength: t[3] });
  }
  return entries;
}
