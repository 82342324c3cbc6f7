import { throwIfAborted } from '../errors.js';
import { ChunkCodec } from './codec.js';
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
  /** Distinct chunks fetched at a time (FETCH_BATCH): also the most a group of packs read together holds. */
  batch: number;
  /** Live bytes of a group of packs read together (REPACK_GROUP_BYTES when absent): see copyForward. */
  groupBytes?: number;
  signal?: AbortSignal;
}

export interface CopiedForward {
  /** Referenced chunks GC was to copy forward, none of whose copies reads well. */
  unreadable: Set<string>;
  /** Packs GC had planned to repack or delete that it keeps whole instead, for holding a copy of an `unreadable` chunk. */
  left: Set<string>;
}

/**
 * Live bytes of the packs read together by one fetch of the repack: the encoded chunks held until
 * their pack has read whole are at most this (counted as ChunkCodec.maxEncodedLength of each
 * chunk's plaintext), unless one pack alone holds more.
 */
export const REPACK_GROUP_BYTES = 64 * 1024 * 1024;

/** One pack's turn in the repack: the chunks read from it, and what became of them. */
interface PackTurn {
  pack: string;
  /** Left before its turn: read only for the chunks of which GC drops another copy. */
  leftBefore: boolean;
  ids: string[];
  /** Upper bound of the encoded bytes of `ids`. */
  bytes: number;
  /** Chunks not yet read well nor found unreadable. */
  pending: Set<string>;
  /** Chunks whose copy here (the first tried: the index resolves them to it) failed. */
  failedHere: Set<string>;
  held: { id: string; blob: Buffer; rawLength: number }[];
  settled: boolean;
}

/**
 * Reads, checked against their ids, the chunks GC's repack keeps, and hands each to `add` encoded
 * (re-encoded from checked plaintext, so that corruption is never copied forward); without `add`
 * (a dry run) only reads and checks them, making the same reads. First the `rescue` chunks, then
 * the referenced chunks the index resolves to each pack of `toRepack`, a group of packs per fetch
 * (in the order of `toRepack`, as many as their live chunks' encoded bytes stay within
 * `groupBytes` and their count within `batch`, at least one pack): the fetcher reads the ranges
 * of the group's packs in parallel. A chunk whose copy fails is read from the next copy the index
 * names (fetchChunks). A pack's chunks are handed to `add` only once the whole pack has been read
 * (each of its chunks read well, from it or another copy, or found unreadable), as soon as it has,
 * while the rest of its group is still being read.
 *
 * A chunk no copy of which reads well (damaged and stored once, say) stops nothing: every pack
 * holding a copy of it leaves `toRepack` and `toDelete` at once (kept whole: its bytes stay for
 * forensics, and verify still reports the backups it breaks) and joins `left`, and GC goes on with
 * the other packs (every pack of `toRepack` still has its turn, the order taken before the rescue
 * reads: one they leave is read as left before its turn, below). Of a pack so left, only the
 * chunks whose copy in it failed (read from another copy) are handed to `add`: the pack holding
 * the good copy may be removed (GC proved nothing else for it, leaving that to this read); the
 * chunks it holds that read well stay there, not copied again at every GC (a pack handed over before another, of its group or a later one, turns out to
 * hold a copy of an unreadable chunk is kept too: its chunks copied forward are then stored twice,
 * extra data a later GC drops). A pack left before its group is planned is still read for the
 * chunks the index resolves to it of which another copy is in a pack GC still removes (the guard
 * left proving them to this read: without it, GC could delete their only good copy), and those
 * whose copy in it failed are handed to `add`; one left while its group is read was planned with
 * all its live chunks, and is read for all of them.
 * Memory: the encoded chunks of one group, at most `groupBytes` (REPACK_GROUP_BYTES, 64 MiB) or
 * one pack's live chunks when more, and what the fetcher plans for at most `batch` chunks.
 * Store failures other than damage are thrown.
 */
export async function copyForward(repo: Repository, plan: RepackPlan, add?: (id: string, blob: Buffer, rawLength: number) => Promise<void>): Promise<CopiedForward> {
  const { toRepack, signal } = plan;
  const groupBytes = plan.groupBytes ?? REPACK_GROUP_BYTES;
  const out: CopiedForward = { unreadable: new Set(), left: new Set() };
  const lost = (id: string): void => {
    out.unreadable.add(id);
    keepEveryCopy(repo, id, plan, out.left);
  };
  const encode = (id: string, data: Buffer): Buffer => repo.codec.encode(data, repo.config.compression, id);
  // Every pack planned for a repack has its turn, taken before the rescue: one the rescue leaves
  // whole (its damaged copy was to be rescued, and the good copy failed this time) is read as left
  // before its turn, for the chunks the guard left proving to that read.
  const order = [...toRepack];
  for (const some of batches(plan.rescue, plan.batch)) {
    await fetchChunks(repo, some, async (chunks) => {
      for (const { id, data } of chunks) {
        throwIfAborted(signal);
        await add?.(id, encode(id, data), data.length);
      }
    }, { signal, onError: lost });
  }
  for (let next = 0; next < order.length; ) {
    // A group's turns are planned when it starts: a pack left by an earlier group is `leftBefore`.
    const group: PackTurn[] = [];
    let bytes = 0;
    let count = 0;
    for (; next < order.length; next++) {
      const turn = planTurn(repo, plan, order[next]!);
      if (group.length > 0 && (bytes + turn.bytes > groupBytes || count + turn.ids.length > plan.batch)) break;
      if (turn.ids.length === 0) continue;
      group.push(turn);
      bytes += turn.bytes;
      count += turn.ids.length;
    }
    await readGroup(repo, plan, group, lost, encode, add);
  }
  return out;
}

/** Whether a repack of pack `packId` copies chunk `id` of it forward: referenced, resolved to it by the index, and not rescued (copied forward first, from wherever a copy reads well). */
function copiedFrom(repo: Repository, plan: Pick<RepackPlan, 'referenced' | 'rescue'>, packId: string, id: string): boolean {
  return plan.referenced.has(id) && !plan.rescue.has(id) && repo.index.get(id)?.pack === packId;
}

/**
 * The encoded bytes of the chunks a repack of `plan` as it stands hands to the new packs (the
 * `rescue` chunks and those copyForward copies out of each pack of `toRepack`), as the index
 * records their blobs: a chunk re-encoded has the length of its blob, so this is the new packs'
 * bytes but for their own trailers and alignment padding. A dry run's estimate; reads nothing.
 */
export function bytesCopiedForward(repo: Repository, plan: Pick<RepackPlan, 'referenced' | 'rescue' | 'toRepack'>): number {
  let bytes = 0;
  for (const id of plan.rescue) bytes += repo.index.get(id)?.length ?? 0;
  for (const packId of plan.toRepack) {
    for (const e of repo.index.packs().get(packId) ?? []) if (copiedFrom(repo, plan, packId, e.id)) bytes += e.length;
  }
  return bytes;
}

/** Pack `packId`'s turn: the chunks to read from it, as the plan stands now. */
function planTurn(repo: Repository, plan: RepackPlan, packId: string): PackTurn {
  const { toRepack, toDelete } = plan;
  // A pack left before its turn (it holds a copy of a chunk found unreadable) is read too, but only
  // for its chunks of which GC still drops another copy: the guard (dropped-copies.ts) left
  // proving them to this read, and the copy kept here may be damaged.
  const leftBefore = !toRepack.has(packId);
  const ids: string[] = [];
  let bytes = 0;
  for (const e of repo.index.packs().get(packId) ?? []) {
    if (!copiedFrom(repo, plan, packId, e.id)) continue;
    if (leftBefore && !repo.index.otherCopies(e.id).some((c) => toRepack.has(c.pack) || toDelete.has(c.pack))) continue;
    ids.push(e.id);
    bytes += ChunkCodec.maxEncodedLength(e.rawLength);
  }
  return { pack: packId, leftBefore, ids, bytes, pending: new Set(ids), failedHere: new Set(), held: [], settled: false };
}

/**
 * Reads the chunks of a group's turns (in fetches of at most `batch` chunks: one unless a pack
 * alone holds more) and hands each pack's over once it has all been read (copyForward).
 */
async function readGroup(
  repo: Repository,
  plan: RepackPlan,
  group: PackTurn[],
  lost: (id: string) => void,
  encode: (id: string, data: Buffer) => Buffer,
  add?: (id: string, blob: Buffer, rawLength: number) => Promise<void>,
): Promise<void> {
  const { toRepack, signal } = plan;
  const turnOf = new Map<string, PackTurn>();
  for (const t of group) for (const id of t.ids) turnOf.set(id, t);
  // Still to repack: every chunk read goes forward. Left (now or before): only those whose copy here failed.
  const settle = async (t: PackTurn): Promise<void> => {
    if (t.settled) return;
    t.settled = true;
    const whole = toRepack.has(t.pack);
    for (const h of t.held.splice(0)) {
      if (whole || t.failedHere.has(h.id)) await add!(h.id, h.blob, h.rawLength);
    }
  };
  for (const some of batches(turnOf.keys(), plan.batch)) {
    await fetchChunks(repo, some, async (chunks) => {
      const done: PackTurn[] = [];
      for (const { id, data } of chunks) {
        throwIfAborted(signal);
        const t = turnOf.get(id)!;
        if (add && (!t.leftBefore || t.failedHere.has(id))) t.held.push({ id, blob: encode(id, data), rawLength: data.length });
        t.pending.delete(id);
        if (t.pending.size === 0) done.push(t);
      }
      for (const t of done) await settle(t);
    }, {
      signal,
      onError: (id) => {
        turnOf.get(id)!.pending.delete(id);
        lost(id); // its packs are kept whole: those of this group too, read or not
      },
      onCopyFailed: (copy) => void turnOf.get(copy.id)!.failedHere.add(copy.id),
    });
  }
  // Packs whose last chunk was found unreadable rather than read.
  for (const t of group) await settle(t);
}
