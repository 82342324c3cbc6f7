import { throwIfAborted } from '../errors.js';
import { fetchChunks } from './chunk-fetcher.js';
import { keepEveryCopy } from './dropped-copies.js';
import { batches } from './fetch-batches.js';
import type { Repository } from './repository.js';

/** What GC's repack copies forward (garbage-collector.ts). `toRepack` and `toDelete` are mutated by copyForward. */
export interface RepackPlan {
  /** Chunk ids some manifest references. */
  referenced: ReadonlySet<string>;
  /** Packs to repack: the referenced chunks the index resolves to them are copied forward. */
  toRepack: Set<string>;
  /** Packs to delete whole. */
  toDelete: Set<string>;
  /** Referenced chunks to copy forward whatever pack they are in (their first copy failed: dropped-copies.ts). */
  rescue: ReadonlySet<string>;
  /** Distinct chunks fetched at a time (FETCH_BATCH). */
  batch: number;
  signal?: AbortSignal;
}

export interface CopiedForward {
  /** Referenced chunks GC was to copy forward, none of whose copies reads well. */
  unreadable: Set<string>;
  /** Packs GC had planned to repack or delete that it keeps whole instead, for holding a copy of an `unreadable` chunk. */
  left: Set<string>;
}

/**
 * Reads, checked against their ids, the chunks GC's repack keeps, and hands each to `add` encoded
 * (re-encoded from checked plaintext, so that corruption is never copied forward); without `add`
 * (a dry run) only reads and checks them. First the `rescue` chunks, then, pack by pack, the
 * referenced chunks the index resolves to each pack of `toRepack`. A chunk whose copy fails is
 * read from the next copy the index names (fetchChunks).
 *
 * A chunk no copy of which reads well (damaged and stored once, say) stops nothing: every pack
 * holding a copy of it leaves `toRepack` and `toDelete` (kept whole: its bytes stay for forensics,
 * and verify still reports the backups it breaks) and joins `left`, and GC goes on with the other
 * packs. Of a pack so left, only the chunks whose copy in it failed (read from another copy) are
 * handed to `add`: the pack holding the good copy may be removed (GC proved nothing else for it,
 * leaving that to this read); the chunks it holds that read well stay there, not copied again at
 * every GC (a pack processed before another turns out to hold a copy of an unreadable chunk is
 * kept too: its chunks copied forward are then stored twice, extra data a later GC drops). A pack
 * left before its turn is still read for the chunks the index resolves to it of which another
 * copy is in a pack GC still removes (the guard left proving them to this read: without it, GC
 * could delete their only good copy), and those whose copy in it failed are handed to `add`.
 * Memory: the encoded chunks of one pack (they are handed over once the whole pack has been read),
 * and what the fetcher plans for `batch` chunks. Store failures other than damage are thrown.
 */
export async function copyForward(repo: Repository, plan: RepackPlan, add?: (id: string, blob: Buffer, rawLength: number) => Promise<void>): Promise<CopiedForward> {
  const { referenced, toRepack, signal } = plan;
  const out: CopiedForward = { unreadable: new Set(), left: new Set() };
  const lost = (id: string): void => {
    out.unreadable.add(id);
    keepEveryCopy(repo, id, plan, out.left);
  };
  const encode = (id: string, data: Buffer): Buffer => repo.codec.encode(data, repo.config.compression, id);
  for (const some of batches(plan.rescue, plan.batch)) {
    await fetchChunks(repo, some, async (chunks) => {
      for (const { id, data } of chunks) {
        throwIfAborted(signal);
        await add?.(id, encode(id, data), data.length);
      }
    }, { signal, onError: lost });
  }
  for (const packId of [...toRepack]) {
    // A pack left before its turn (it holds a copy of a chunk found unreadable) is read too, but only
    // for its chunks of which GC still drops another copy: the guard (dropped-copies.ts) left
    // proving them to this read, and the copy kept here may be damaged.
    const leftBefore = !toRepack.has(packId);
    const ids = new Set<string>();
    for (const e of repo.index.packs().get(packId) ?? []) {
      if (!referenced.has(e.id) || plan.rescue.has(e.id) || repo.index.get(e.id)?.pack !== packId) continue;
      if (leftBefore && !repo.index.otherCopies(e.id).some((c) => toRepack.has(c.pack) || plan.toDelete.has(c.pack))) continue;
      ids.add(e.id);
    }
    const held: { id: string; blob: Buffer; rawLength: number }[] = [];
    const failedHere = new Set<string>(); // the first copy tried is this pack's (the index resolves the chunk to it)
    const unreadable: string[] = [];
    for (const some of batches(ids, plan.batch)) {
      await fetchChunks(repo, some, async (chunks) => {
        for (const { id, data } of chunks) {
          throwIfAborted(signal);
          if (add && (!leftBefore || failedHere.has(id))) held.push({ id, blob: encode(id, data), rawLength: data.length });
        }
      }, { signal, onError: (id) => void unreadable.push(id), onCopyFailed: (copy) => void failedHere.add(copy.id) });
    }
    for (const id of unreadable) lost(id);
    // Still to repack: every chunk read goes forward. Left (now or before): only those whose copy here failed.
    const whole = toRepack.has(packId);
    for (const h of held) {
      if (whole || failedHere.has(h.id)) await add!(h.id, h.blob, h.rawLength);
    }
  }
  return out;
}
