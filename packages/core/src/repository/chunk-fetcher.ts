import { CairnError, cancelledError, isCairnError, throwIfAborted } from '../errors.js';
import type { Location } from './chunk-index.js';
import { giveSharedBuffer, takeSharedBuffer } from '../util/buffer-pool.js';
import { FreeList } from '../util/free-list.js';
import { DIRECT_IO_ALIGN, alignPad } from '../util/direct-io.js';
import { Keys } from './format.js';
import { ChunkCodec } from './codec.js';
import type { Repository } from './repository.js';

/** A contiguous byte range of one pack, covering one or more blobs. */
interface PackRange {
  pack: string;
  offset: number;
  length: number;
  /** Plaintext bytes of the blobs (bounds the decoded batch). */
  raw: number;
  blobs: Location[];
}

export interface FetchOptions {
  /** Ranged gets in flight (each with its own range buffer). Default 4. */
  concurrency?: number;
  /** Plaintext buffers: ranges being decoded or handed to onChunks. Default concurrency + 2. */
  decodeBuffers?: number;
  /** Largest coalesced range, in stored bytes and in plaintext bytes. Default 2 MiB (measured best of 2/4/8 here). */
  maxRange?: number;
  /** Largest gap between two blobs read in one range, bytes. Default 256 KiB. */
  maxGap?: number;
  /**
   * Each range is read once (a restore, a verify): ranges are laid out so that the store may read
   * them past its caches (ObjectStore.getInto's `once`). Default false (an NBD export rereads).
   */
  once?: boolean;
  signal?: AbortSignal;
}

/** Groups blob locations into few, sequential ranged gets per pack. Pure. */
export function planRanges(locations: Iterable<Location>, maxRange: number, maxGap: number): PackRange[] {
  const byPack = new Map<string, Location[]>();
  for (const l of locations) {
    const list = byPack.get(l.pack) ?? [];
    list.push(l);
    byPack.set(l.pack, list);
  }
  const ranges: PackRange[] = [];
  for (const [pack, list] of byPack) {
    list.sort((a, b) => a.offset - b.offset);
    let cur: PackRange | undefined;
    for (const l of list) {
      const end = l.offset + l.length;
      if (cur && l.offset - (cur.offset + cur.length) <= maxGap && end - cur.offset <= maxRange && cur.raw + l.rawLength <= maxRange) {
        cur.length = Math.max(cur.length, end - cur.offset);
        cur.raw += l.rawLength;
        cur.blobs.push(l);
      } else {
        cur = { pack, offset: l.offset, length: l.length, raw: l.rawLength, blobs: [l] };
        ranges.push(cur);
      }
    }
  }
  return ranges;
}

/**
 * The part of range `r` that a pack of `size` bytes holds whole (`kept`: the blobs that end by
 * `size`, in one range ending at the last of them) and the blobs it cuts or lacks (`lost`); or
 * undefined when the cut leaves no blob whole, or every blob whole (the range failed for another
 * reason). Pure.
 */
export function cutRange(r: PackRange, size: number): { kept: PackRange; lost: Location[] } | undefined {
  const whole = r.blobs.filter((b) => b.offset + b.length <= size);
  if (whole.length === 0 || whole.length === r.blobs.length) return undefined;
  const end = whole.reduce((m, b) => Math.max(m, b.offset + b.length), r.offset);
  const raw = whole.reduce((n, b) => n + b.rawLength, 0);
  return { kept: { pack: r.pack, offset: r.offset, length: end - r.offset, raw, blobs: whole }, lost: r.blobs.filter((b) => b.offset + b.length > size) };
}

/**
 * The copy's error of a failed ranged get of `pack`: `NOT_FOUND` (missing) or `CORRUPT` (short:
 * a range past its end, or the store's own `CORRUPT` when it ended during the read). Any other
 * error is a failure of the store, not of a copy, and is thrown.
 */
function packDamage(err: unknown, pack: string): CairnError {
  if (isCairnError(err) && (err.code === 'NOT_FOUND' || err.code === 'INVALID_INPUT')) {
    return new CairnError(err.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'CORRUPT', `pack ${pack} is ${err.code === 'NOT_FOUND' ? 'missing' : 'truncated'}`, { cause: err });
  }
  if (isCairnError(err) && err.code === 'CORRUPT') return err;
  throw err;
}

/**
 * Fetches and opens chunks by id, calling `onChunks` with the checked plaintexts of each fetched
 * range as it is decoded (ranges are planned in pack order and several are in flight, so calls
 * may overlap and come in any order; the plaintexts of one range are views into one buffer, back
 * to back, which is reused once `onChunks` resolves: copy what must outlive the call). Every
 * chunk is handed over once however many times it is wanted. A chunk whose copy fails its checks
 * or is gone (its pack missing or short) is fetched from the next copy the index names
 * (ChunkIndex.otherCopies), after the ranges planned before it, and `onCopyFailed` is told of the
 * copy that failed (a short pack fails only the chunks whose blobs it cuts or lacks: those wholly
 * before its end are read and handed over as usual); only when no copy is left is it an error:
 * `NOT_FOUND` names a chunk the index lacks or whose pack is gone, `CORRUPT` a chunk that fails
 * its checks or whose blob its pack cuts. With `onError`, those
 * errors are passed to it instead and the walk goes on (verify). On any other failure no new
 * range starts, the ranges in flight settle, and the first error is thrown. A chunk read well the
 * first time costs nothing more than it did before copies were tried.
 *
 * Cancelled (`signal`), it rejects with `CANCELLED` at once, whatever the store and `onChunks` do
 * (an error raised before the abort is thrown instead): it waits neither for buffers nor for the
 * ranges in flight. From the abort on, no range is read, decoded, reported (onError, onCopyFailed)
 * or handed to `onChunks`; a call of `onChunks` in progress is not stopped (it should watch the
 * signal itself). The signal goes to the store's reads: a `cancellable` store stops them (ObjectStore
 * CallOptions). The shared buffers go back to util/buffer-pool once every range has settled,
 * unless a ranged get of a store that is not `cancellable` was still in flight at the abort:
 * memory such a store may still fill is never pooled again (it is left to the garbage collector).
 */
export async function fetchChunks(
  repo: Repository,
  ids: Iterable<string>,
  onChunks: (chunks: { id: string; data: Buffer }[]) => Promise<void>,
  options: FetchOptions & { onError?: (id: string, err: CairnError) => void; onCopyFailed?: (copy: Location, err: CairnError) => void } = {},
): Promise<void> {
  // An index entry no chunk of this repository can have (damaged, or crafted) is never planned:
  // its lengths would size the shared buffers.
  const maxRaw = repo.config.chunkSize;
  const maxStored = ChunkCodec.maxEncodedLength(maxRaw);
  /** Per chunk whose copy failed: the copies tried (`pack@offset`). */
  const tried = new Map<string, Set<string>>();
  /** Copies to fetch in the next round, in place of copies that failed in this one. */
  const retries: Location[] = [];
  // A copy that failed: the chunk's next untried copy is fetched in the next round; with none
  // left, the error is the chunk's (passed to onError, or thrown: run() then fails the walk).
  const failed = (copy: Location, err: CairnError): void => {
    const seen = tried.get(copy.id) ?? new Set<string>();
    seen.add(`${copy.pack}@${copy.offset}`);
    const next = repo.index.otherCopies(copy.id).find((c) => !seen.has(`${c.pack}@${c.offset}`));
    if (!next) {
      if (options.onError) options.onError(copy.id, err);
      else throw err;
      return;
    }
    tried.set(copy.id, seen);
    options.onCopyFailed?.(copy, err);
    retries.push(next);
  };
  const plan = (copies: Iterable<Location>): Location[] => {
    const out: Location[] = [];
    for (const l of copies) {
      if (l.rawLength <= maxRaw && l.length <= maxStored) out.push(l);
      else failed(l, new CairnError('CORRUPT', `the index entry of chunk ${l.id} is damaged: ${l.length} bytes stored for ${l.rawLength}, in a repository of ${maxRaw}-byte chunks`, { details: { chunk: l.id, pack: l.pack } }));
    }
    return out;
  };
  const first: Location[] = [];
  for (const id of new Set(ids)) {
    const l = repo.index.get(id);
    if (l) first.push(l);
    else {
      const err = new CairnError('NOT_FOUND', `chunk ${id} is in no pack`, { details: { chunk: id } });
      if (options.onError) options.onError(id, err);
      else throw err;
    }
  }
  for (let round = plan(first); round.length > 0; round = plan(retries.splice(0))) await fetchRound(repo, round, onChunks, failed, options);
}

/**
 * Fetches `locations` (checked entries) in ranges, handing the chunks read well to `onChunks` and
 * each copy that fails its checks or is gone to `failed` (which throws to fail the walk). Any
 * other failure stops new ranges, lets those in flight settle, and is thrown; an abort of
 * `options.signal` ends it at once (see fetchChunks).
 */
async function fetchRound(
  repo: Repository,
  locations: Location[],
  onChunks: (chunks: { id: string; data: Buffer }[]) => Promise<void>,
  failed: (copy: Location, err: CairnError) => void,
  options: FetchOptions,
): Promise<void> {
  const maxRange = options.maxRange ?? 2 * 1024 * 1024;
  const ranges = planRanges(locations, maxRange, options.maxGap ?? 256 * 1024);
  const processor = repo.processor();
  const store = repo.store;
  const reads = Math.max(1, Math.min(options.concurrency ?? 4, ranges.length));
  const decodes = Math.max(1, Math.min(options.decodeBuffers ?? reads + 2, ranges.length));
  // Two pools of buffers shared with the workers and reused: ranges as read, and plaintexts. A
  // range's buffer is free again once it is decoded, so the next read overlaps the previous
  // range's onChunks (the restore's writes); a plaintext buffer is free once onChunks resolves.
  // A buffer holds at most maxRange bytes, or one blob larger than that (plus its alignment shift).
  // With `once`, a range also needs room for its rounding to DIRECT_IO_ALIGN on both sides.
  const largest = Math.ceil((ranges.reduce((m, r) => Math.max(m, r.length, r.raw), maxRange) + 2 * DIRECT_IO_ALIGN) / 65536) * 65536;
  const arena = takeSharedBuffer((reads + decodes) * largest);
  const pool = (first: number, count: number): FreeList<Buffer> => new FreeList(Array.from({ length: count }, (_, k) => arena.subarray((first + k) * largest, (first + k + 1) * largest)));
  const inputs = pool(0, reads);
  const outputs = pool(reads, decodes);
  let failure: { error: unknown } | undefined;
  const inflight = new Set<Promise<void>>();
  // Cancelled: the round ends at once (`cancelled` rejects) and every range still in flight stops
  // at its next step (`gone`). One listener per round; a range only tests a flag.
  const signal = options.signal;
  let gone = false;
  /** Ranged gets into the arena in flight: while one is, the store may write into it. */
  let reading = 0;
  let onAbort: (() => void) | undefined;
  const cancelled = new Promise<never>((_, reject) => {
    onAbort = (): void => {
      gone = true;
      failure ??= { error: cancelledError(signal!) };
      reject(failure.error);
    };
  });
  cancelled.catch(() => undefined); // raised where it is raced
  if (signal) signal.addEventListener('abort', onAbort!, { once: true });

  /** Reads range `r` of its pack into `into` (r.length bytes). */
  const read = async (r: PackRange, into: Buffer): Promise<void> => {
    const key = Keys.pack(r.pack);
    if (store.getInto) {
      reading++;
      try {
        await store.getInto(key, { offset: r.offset, length: r.length }, into, { once: options.once, signal });
      } finally {
        reading--;
      }
    } else {
      const got = await store.get(key, { offset: r.offset, length: r.length }, { signal });
      if (!gone) got.copy(into);
    }
  };

  /**
   * Called once the ranged get of `r` into `range` failed with `damage`, a copy's error: reads
   * again the part of `r` that its pack still holds whole, when the pack is short, and fails the
   * blobs past its end; returns that part, or undefined once every blob of `r` is failed. Only a
   * short pack is cut (one head and one more get, on damage only): a missing pack, or a range
   * whose blobs the pack all holds, fails every blob. Errors of the store are thrown.
   */
  const salvage = async (r: PackRange, range: Buffer, damage: CairnError): Promise<PackRange | undefined> => {
    let cut: ReturnType<typeof cutRange>;
    let size = 0;
    if (damage.code === 'CORRUPT' && r.blobs.length > 1) {
      try {
        size = (await store.head(Keys.pack(r.pack), { signal })).size;
        cut = cutRange(r, size);
      } catch (err) {
        damage = packDamage(err, r.pack); // gone since: every blob fails
      }
    }
    if (gone) return undefined;
    if (cut) {
      try {
        await read(cut.kept, range.subarray(0, cut.kept.length));
      } catch (err) {
        if (gone) return undefined;
        damage = packDamage(err, r.pack); // cut again since: every blob fails
        cut = undefined;
      }
    }
    if (gone) return undefined;
    if (!cut) {
      for (const b of r.blobs) failed(b, damage);
      return undefined;
    }
    for (const b of cut.lost) {
      const message = `pack ${r.pack} is truncated: it ends at byte ${size}, before the end of chunk ${b.id} (bytes ${b.offset} to ${b.offset + b.length})`;
      failed(b, new CairnError('CORRUPT', message, { cause: damage, details: { chunk: b.id, pack: r.pack, size } }));
    }
    return cut.kept;
  };

  // One range: read (holding an input), decode (holding both), hand over (holding the output).
  const run = async (planned: PackRange, input: Buffer): Promise<void> => {
    let holdsInput = true;
    let output: Buffer | undefined;
    try {
      // The range sits at its pack offset's alignment, so each blob is as aligned in memory as
      // the writer laid it out (see util/direct-io's COPY_ALIGN); with `once`, at its alignment to
      // DIRECT_IO_ALIGN from the buffer's page-aligned start (directReadSpan's layout).
      const shift = options.once ? planned.offset % DIRECT_IO_ALIGN : alignPad(0, planned.offset);
      let r = planned;
      let range = input.subarray(shift, shift + r.length);
      try {
        await read(r, range);
      } catch (err) {
        if (gone) return;
        // Only damage is a copy's; a store that fails (UNAVAILABLE…) fails the walk. A short pack
        // fails only the blobs past its end: those before it are decoded as if read at once.
        const kept = await salvage(r, range, packDamage(err, r.pack));
        if (!kept) return;
        r = kept;
        range = range.subarray(0, r.length);
      }
      if (gone) return;
      output = await outputs.take(signal);
      if (gone) return;
      const decoded = await processor.decode(
        range,
        output,
        r.blobs.map((b) => ({ offset: b.offset - r.offset, length: b.length, id: b.id, rawLength: b.rawLength })),
      );
      inputs.give(input);
      holdsInput = false;
      if (gone) return;
      for (const [k, d] of decoded.entries()) {
        if (d.data) continue;
        if (d.error!.code === 'CORRUPT' || d.error!.code === 'NOT_FOUND') failed(r.blobs[k]!, d.error!);
        else throw d.error!;
      }
      await onChunks(decoded.filter((d) => d.data).map((d) => ({ id: d.id, data: d.data! })));
    } catch (err) {
      failure ??= { error: err };
    } finally {
      if (holdsInput) inputs.give(input);
      if (output) outputs.give(output);
    }
  };

  try {
    for (const r of ranges) {
      throwIfAborted(signal);
      const input = await inputs.take(signal);
      if (failure) {
        inputs.give(input);
        break;
      }
      const p = run(r, input);
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
    }
  } catch (err) {
    failure ??= { error: err };
  }
  try {
    await Promise.race([Promise.all(inflight), cancelled]); // run() settles every range and never rejects
  } catch {
    // cancelled: `failure` holds the error to throw
  }
  gone = true; // a range that settles from now on does nothing more
  if (signal) signal.removeEventListener('abort', onAbort!);
  // No worker, store or onChunks holds a buffer once every range has settled; but memory the
  // store may still be filling is never pooled again, unless the store is `cancellable`: it got
  // the signal, and its getInto writes nothing more once it has settled (ObjectStore.getInto).
  if (inflight.size === 0) giveSharedBuffer(arena);
  else if (reading === 0 || store.capabilities.cancellable) void Promise.all(inflight).then(() => giveSharedBuffer(arena));
  if (failure) throw failure.error;
}
