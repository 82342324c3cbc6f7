import { fetchChunks } from './chunk-fetcher.js';
import { FETCH_BATCH, batches } from './fetch-batches.js';
import type { Repository } from './repository.js';

/** What GC plans to remove (garbage-collector.ts), and what it may do instead. Mutated by guardDroppedCopies. */
export interface RemovalPlan {
  /** Chunk ids some manifest references. */
  referenced: ReadonlySet<string>;
  /** Packs to repack: their chunks the index resolves to them are copied forward, then they are deleted. */
  toRepack: Set<string>;
  /** Packs to delete whole (none of their copies is one the index resolves a referenced chunk to). */
  toDelete: Set<string>;
  /** Whether a pack is past the grace period (only those are repacked or deleted). */
  old: (packId: string) => boolean;
  /** Whether GC may write new packs (false for a pass that only deletes: `repackThreshold` Infinity). */
  repacks: boolean;
  signal?: AbortSignal;
}

export interface DroppedCopies {
  /** Referenced chunks GC must copy forward from a good copy (their kept copy failed its checks). */
  rescue: Set<string>;
  /** Referenced chunks whose kept copy failed its checks while another copy read well. */
  damaged: number;
  /** Referenced chunks GC was about to drop a copy of, none of whose copies reads well. */
  unreadable: number;
  /** Packs GC had planned to repack or delete that it keeps whole instead, for holding a copy of an `unreadable` chunk. */
  left: Set<string>;
}

/**
 * Keeps whole every pack the index names as holding a copy of chunk `id`: takes each out of
 * `plan`'s repacks and deletes, and adds to `left` those it takes out (GC had planned to remove them).
 */
export function keepEveryCopy(repo: Repository, id: string, plan: Pick<RemovalPlan, 'toRepack' | 'toDelete'>, left?: Set<string>): string[] {
  const l = repo.index.get(id);
  const packs = l ? [l.pack, ...repo.index.otherCopies(id).map((c) => c.pack)] : [];
  for (const p of packs) {
    if (plan.toRepack.delete(p) || plan.toDelete.delete(p)) left?.add(p);
  }
  return packs;
}

/**
 * Makes sure GC never drops the only good copy of a referenced chunk. GC drops a copy of one when
 * it deletes or repacks a pack holding a copy the index does not resolve to (a chunk stored twice:
 * a repack copies forward only the copies the index resolves to the pack, and keeps the others
 * elsewhere). The copy kept is proven first: unless its own pack is repacked (the repack reads it,
 * checked, taking the next copy when it fails), it is fetched and checked against its id as
 * restore does. Cost: one read per referenced chunk whose copy GC drops, nothing for the rest.
 *
 * When the kept copy fails (damaged, or its pack short or gone) and another reads well: with
 * `repacks`, the chunk joins `rescue` (GC copies it forward: the fetch falls back to the good
 * copy), and the failed copy's pack, once past the grace period, joins `toRepack`, so that no index
 * names the damaged copy again (the copies that repack drops are then proven in turn); without
 * `repacks`, every pack holding a copy of the chunk is kept whole. When no copy reads well, every
 * pack holding one is kept whole (verify reports the chunk). A pack kept whole for a chunk is never
 * repacked or deleted by this GC. Store failures other than damage (UNAVAILABLE…) are thrown.
 */
export async function guardDroppedCopies(repo: Repository, plan: RemovalPlan): Promise<DroppedCopies> {
  const { referenced, toRepack, toDelete } = plan;
  const out: DroppedCopies = { rescue: new Set(), damaged: 0, unreadable: 0, left: new Set() };
  const checked = new Set<string>();
  const spared = new Set<string>(); // packs kept whole
  const spare = (id: string, left?: Set<string>): void => {
    for (const p of keepEveryCopy(repo, id, plan, left)) spared.add(p);
  };
  // Sparing a pack or repacking one changes which copies are dropped: rounds run until none is left unproven.
  for (;;) {
    const ids = new Set<string>();
    for (const packId of [...toRepack, ...toDelete]) {
      for (const e of repo.index.packs().get(packId) ?? []) {
        if (!referenced.has(e.id) || checked.has(e.id)) continue;
        const kept = repo.index.get(e.id)?.pack;
        if (kept === undefined || kept === packId || toRepack.has(kept)) continue; // copied forward, or read by a repack
        ids.add(e.id);
      }
    }
    if (ids.size === 0) return out;
    for (const id of ids) checked.add(id);
    const found = await readKeptCopies(repo, ids, plan.signal);
    for (const [id, packId] of found.damaged) {
      out.damaged++;
      if (!plan.repacks) {
        spare(id);
        continue;
      }
      out.rescue.add(id);
      if (plan.old(packId) && !spared.has(packId) && repo.index.packs().has(packId)) toRepack.add(packId);
    }
    for (const id of found.unreadable) {
      out.unreadable++;
      spare(id, out.left);
    }
  }
}

/**
 * Fetches `ids` as restore does, each from the copy the index resolves it to, checked against its
 * id, else from the next copy the index names. `damaged`: chunks whose first copy failed while a
 * later one read well, each with the pack of the copy that failed; `unreadable`: chunks no copy of
 * which reads well. Fetches `batch` ids at a time (FETCH_BATCH, as verify does), so that what the
 * fetcher plans per chunk stays bounded however many copies GC drops (an interrupted repack of a
 * large repository leaves very many duplicates).
 */
export async function readKeptCopies(repo: Repository, ids: Iterable<string>, signal?: AbortSignal, batch = FETCH_BATCH): Promise<{ damaged: Map<string, string>; unreadable: Set<string> }> {
  const damaged = new Map<string, string>();
  const unreadable = new Set<string>();
  for (const some of batches(ids, batch)) {
    await fetchChunks(repo, some, async () => undefined, {
      once: true,
      signal,
      // A chunk's first failed copy is the one the index resolves it to (fetchChunks reads that first).
      onCopyFailed: (copy) => void (damaged.has(copy.id) || damaged.set(copy.id, copy.pack)),
      onError: (id) => void unreadable.add(id),
    });
  }
  for (const id of unreadable) damaged.delete(id);
  return { damaged, unreadable };
}
