import type { BackupJob, BackupResult, BackupSource } from '../contracts/backup-service.js';
import { CairnError, cancelledError, isCairnError, throwIfAborted } from '../errors.js';
import { batchesIn, chunkLength, chunkRangesOf, chunksIn, mergeRanges, runsOf, type ChunkRange } from './chunk-plan.js';
import type { Manifest } from './format.js';
import type { Extent } from '../contracts/block-device.js';
import type { ChunkMap } from './chunk-map.js';
import type { ChunkIndex } from './chunk-index.js';
import type { ChunkList } from './chunk-list.js';
import { FORMAT_VERSION } from './format.js';
import { ChunkPageWriter } from './chunk-page-writer.js';
import { PackWriter } from './pack-writer.js';
import { BorrowedChunks } from './borrowed-chunks.js';
import { ChunkCodec } from './codec.js';
import { outputBytesPerChunk } from './chunk-tasks.js';
import { giveSharedBuffer, takeSharedBuffer } from '../util/buffer-pool.js';
import { FreeList } from '../util/free-list.js';
import type { ProcessedChunk } from './chunk-processor.js';
import type { Repository } from './repository.js';
import { assertReadInto, checkExtents } from '../drivers/device-checks.js';

export interface WriteOptions {
  /**
   * Read units in flight ahead of the workers. Default: 4 per worker + 4. Memory: this × unit × 2
   * (the unit and room for its encoded form), where the unit is `readUnit` rounded down to whole
   * chunks but never less than one chunk: about 24 MiB at the defaults on 2 cores, but 384 MiB with
   * 16 MiB chunks, and it grows with the workers (one per core by default). Set it to bound a
   * backup's memory on a machine with many cores or with large chunks.
   */
  readAhead?: number;
  /** Bytes read and handed to a worker at once (whole chunks, at least one). Default 1 MiB. */
  readUnit?: number;
  /** Pack uploads in flight. Default 2 (measured with O_DIRECT pack writes, 2 GiB benchmark: 1 → 2.85 s, 2 → 2.58 s, 3 → 2.63 s and +18 MiB of RSS). */
  uploads?: number;
  /** Chunks per page of the chunk list. Default PAGE_CHUNKS (4096); small pages are for tests. */
  pageChunks?: number;
  /** Resolves when repo.index is loaded (a refresh started by the caller); awaited before the first dedup check. Default: refresh here. */
  indexReady?: Promise<void>;
  /**
   * The repository lock the backup holds against GC (LockHandle.assertHeld: throws once it has
   * lapsed). Checked once every chunk is stored and named, just before the manifest is written,
   * and again once the manifest landed: a writer stalled in that write past the lock's lapse may
   * have let a GC delete the packs and pages the manifest names, so the manifest is taken back
   * (Repository.withdrawManifest) and the backup fails with the lock's error (`BUSY`).
   */
  lock?: { assertHeld(): void };
}

/** A read unit and the room for its encoded chunks, in memory shared with the workers. */
interface Slot {
  input: Buffer;
  output: Buffer;
}

/**
 * The chunks to read: those changed since the parent, those the size change touches, and those
 * whose id in the parent's manifest the index does not hold; or with no usable change tracking
 * every chunk that may hold data (chunks outside every allocated extent are zero without
 * reading). Never a guess: every chunk not read is zero, or (`usedChanges`) the parent's chunk at
 * its place, of the same length, held by the index.
 */
async function chunksToRead(repo: Repository, source: BackupSource, parent: Manifest | undefined, count: number, indexReady: Promise<void>): Promise<{ ranges: ChunkRange[]; usedChanges: boolean }> {
  const { chunkSize } = repo.config;
  const size = source.device.size;
  if (parent && source.changedSince && parent.chunkSize === chunkSize) {
    let changed: ChunkRange[] | undefined;
    try {
      const query = { kind: 'changed', since: source.changedSince } as const;
      changed = chunkRangesOf(checkExtents(source.device, query, await source.device.extents(query)), chunkSize, count);
    } catch (err) {
      if (!(isCairnError(err) && (err.code === 'NOT_FOUND' || err.code === 'NOT_SUPPORTED'))) throw err;
    }
    if (changed) {
      // A size change: the chunk where the shorter of the two sizes ends, when that is inside a
      // chunk (its length differs from the parent's chunk at its place: the new last chunk of a
      // volume that shrank, the parent's short last chunk of one that grew), and every chunk
      // past it. A volume that shrank to a chunk multiple keeps whole chunks of the parent only.
      const resized: ChunkRange[] = size !== parent.size ? [[Math.floor(Math.min(size, parent.size) / chunkSize), count]] : [];
      await indexReady;
      return { ranges: mergeRanges([...changed, ...resized, ...(await unheldChunks(parent.chunks, count, repo.index))]), usedChanges: true };
    }
  }
  // Changed extents are already few; only a full read is worth a walk of the allocation map
  // (measured: 20 ms for a 2 GiB file, a tenth of a small incremental). A changed chunk that is
  // a hole now reads as zeros and is recorded as zero all the same. A driver that cannot list
  // them is read whole; one whose list breaks the contract fails the backup (checkExtents).
  const query = { kind: 'allocated' } as const;
  let allocated: Extent[];
  try {
    allocated = await source.device.extents(query);
  } catch (err) {
    if (!isCairnError(err)) throw err;
    return { ranges: count > 0 ? [[0, count]] : [], usedChanges: false };
  }
  return { ranges: chunkRangesOf(checkExtents(source.device, query, allocated).filter((e) => !e.zero), chunkSize, count), usedChanges: false };
}

/** Pages of the parent's chunk list loading while one is checked (ChunkMap keeps the last 4 it loaded). */
const PAGES_AHEAD = 2;

/**
 * The chunks below `count` whose id in `map` (the parent's chunk list) `index` does not hold (an
 * index object damaged or deleted, a lost pack that GC dropped from the index): an incremental
 * with change tracking reads and stores them as if changed instead of naming data the repository
 * lacks. Reads every page of the
 * map once (a page per PAGE_CHUNKS chunks: 140 KiB per 512 MiB of volume at the default sizes;
 * a page of zero chunks is not stored, nor read) and looks each id up without making a string.
 * A page that cannot be read fails the backup (`NOT_FOUND`/`CORRUPT` naming the parent), as it
 * does when the writer reads it for a changed chunk.
 */
async function unheldChunks(map: ChunkMap, count: number, index: ChunkIndex): Promise<ChunkRange[]> {
  const pages = Math.min(map.pageCount, Math.ceil(count / map.pageChunks));
  const out: [number, number][] = [];
  const loading: Promise<ChunkList>[] = [];
  for (let k = 0; k < pages; k++) {
    while (loading.length <= PAGES_AHEAD && k + loading.length < pages) loading.push(map.page(k + loading.length));
    const page = await loading.shift()!;
    const first = k * map.pageChunks;
    for (const j of page.unheld((bytes, at) => index.hasBinary(bytes, at), 0, count - first)) {
      const i = first + j;
      const last = out[out.length - 1];
      if (last && last[1] === i) last[1] = i + 1;
      else out.push([i, i + 1]);
    }
  }
  return out;
}

/** The ids of chunks `indexes` in `map`, loading each page they fall in once. */
async function idsIn(map: ChunkMap, indexes: readonly number[]): Promise<(string | null)[]> {
  const per = map.pageChunks;
  const pages = new Map<number, ChunkList>();
  for (const i of indexes) {
    const k = Math.floor(i / per);
    if (!pages.has(k) && k < map.pageCount) pages.set(k, map.peek(k) ?? (await map.page(k)));
  }
  return indexes.map((i) => pages.get(Math.floor(i / per))?.get(i % per) ?? null);
}

/**
 * Copies a device into the repository: read → hash → compress → seal (worker threads) → pack →
 * upload, bounded by `readAhead` chunk buffers and the pack writer's upload window. The manifest
 * is written last, so a failed or cancelled backup leaves only unreferenced packs and chunk list
 * pages (GC's to take). A chunk another backup of this process is storing is reused, not stored
 * again; before the manifest, each such chunk is named (the other backup's pack is named by this
 * one if need be) or read again and stored (BorrowedChunks), so the manifest never depends on a
 * backup that may yet fail. `CONFLICT` when such a chunk is no longer on the device by then.
 *
 * Cancelled (`job.signal`), it rejects with `CANCELLED` without waiting for the store: waits for
 * read slots, for pack uploads (PackWriter.cancel) and for chunk list page writes
 * (ChunkPageWriter.finish) end at once, so a store whose writes hang does not hold the job (nor
 * do reads of the parent's chunk list pages when the caller read `parent` with the job's
 * signal); the slots go back to the shared pool once every batch has settled (a worker task in
 * progress runs to its end, milliseconds), and no store write starts after. The
 * signal goes to the store's writes of packs, index objects and chunk list pages (a `cancellable`
 * store ends them and publishes nothing more: ObjectStore's CallOptions); not to the manifest's,
 * the commit point, written only once everything else is stored.
 *
 * Of the parent, a chunk is reused (equal to the chunk read at its place, or with change
 * tracking not read at all) only when the index holds it; a chunk the size change touches is
 * always read. So the manifest never names data the repository lacks, nor a chunk of another
 * length than its place (docs/repository-format.md, "What a writer guarantees").
 */
export async function writeBackup(repo: Repository, job: BackupJob, source: BackupSource, parent: Manifest | undefined, options: WriteOptions = {}): Promise<{ result: BackupResult; manifest: Manifest }> {
  const started = Date.now();
  const { chunkSize } = repo.config;
  const device = source.device;
  const size = device.size;
  const count = Math.ceil(size / chunkSize);
  const indexReady = options.indexReady ?? repo.index.refresh({ signal: job.signal });
  indexReady.catch(() => undefined); // raised where it is awaited
  const { ranges, usedChanges } = await chunksToRead(repo, source, parent, count, indexReady);
  const sameLayout = parent && parent.chunkSize === chunkSize;
  // Chunks not read are zero, or (with change tracking) the parent's.
  const pages = new ChunkPageWriter(repo.store, repo.codec, job.backup.id, count, usedChanges ? parent!.chunks : undefined, options.pageChunks, job.signal);

  const processor = repo.processor();
  // Chunks decided for upload but not yet in the index are held in repo.inflight under `me`; each
  // leaves once an index object names its pack (the index answers for it then): at most the
  // blobs of INDEX_EVERY_PACKS packs, or of INDEX_EVERY_BLOBS, plus the packs being filled and
  // uploaded. Another backup of this process reuses them (and this one reuses theirs: `borrowed`).
  const me = {};
  const borrowed = new BorrowedChunks(repo.index);
  const writer = new PackWriter(repo.store, repo.codec, repo.index, repo.config.packSize, ChunkCodec.maxEncodedLength(chunkSize), options.uploads ?? 2, {
    stored: (packId, entries) => repo.inflight.stored(me, packId, entries),
    named: (entries) => repo.inflight.release(me, entries),
  });
  const perUnit = Math.max(1, Math.floor((options.readUnit ?? 1024 * 1024) / chunkSize));
  const slots = options.readAhead ?? processor.size * 4 + 4;
  // One shared arena: per slot, a read unit and room for its encoded chunks. Workers work in place.
  const inputSize = chunkSize * perUnit;
  const outputSize = outputBytesPerChunk(chunkSize) * perUnit;
  const arena = takeSharedBuffer(slots * (inputSize + outputSize));
  const free = new FreeList<Slot>(
    Array.from({ length: slots }, (_, k) => {
      const at = k * (inputSize + outputSize);
      return { input: arena.subarray(at, at + inputSize), output: arena.subarray(at + inputSize, at + inputSize + outputSize) };
    }),
  );
  const cancel = (): void => writer.cancel(cancelledError(job.signal!, { message: `backup ${job.backup.id} cancelled` }));
  if (job.signal?.aborted) cancel();
  job.signal?.addEventListener('abort', cancel, { once: true });
  const stats = { bytesRead: 0, bytesNew: 0, bytesReused: 0, bytesStored: 0, durationMs: 0 };
  // Bytes this backup reads: whole chunks, but the volume's last may be short. Reported once at
  // the start, so that a backup with nothing to read (an incremental of an unchanged volume)
  // reports a total it reaches (0 of 0) instead of none.
  const lastChunk = Math.ceil(size / chunkSize) - 1;
  const total = chunksIn(ranges) * chunkSize - (ranges.at(-1)?.[1] === lastChunk + 1 ? chunkSize - chunkLength(size, chunkSize, lastChunk) : 0);
  job.progress(0, total);
  let failure: unknown;
  const inflight = new Set<Promise<void>>();
  /** Settles once the last batch dispatched has been packed (or has failed). */
  let packed: Promise<void> = Promise.resolve();
  let chunks: ChunkMap;

  // The slot comes back only once its chunks are packed: when uploads lag, reading waits, so
  // encoded data in memory stays bounded by the slots (and the packs in flight).
  // Batches are packed whole and in the order they were read (`turn`: the batch before has been
  // packed or has failed), so consecutive chunks of the volume sit consecutively in its packs and
  // a restore reads them in long ranges and writes them in long runs. Packed as each finished,
  // the blobs of concurrent batches interleaved one by one (measured: 35% of a 2 GiB restore went
  // out in single-chunk writes).
  const handle = async (run: number[], slot: Slot, length: number, parentIds: (string | null)[], heldPages: number[], turn: Promise<void>): Promise<void> => {
    try {
      const input = slot.input.subarray(0, length);
      let processed = await processor.process(input, slot.output, parentIds);
      // A chunk equal to the parent's (`same`: hashed, not encoded) is reused only when the index
      // holds it: the parent's manifest may name a chunk whose index object is damaged or whose
      // pack is gone. When one is not held, the batch is encoded again with such chunks as new.
      // One index lookup per equal chunk; a second pass only in a damaged repository.
      await indexReady;
      if (processed.some((c) => c.same && !repo.index.has(c.id!))) {
        processed = await processor.process(input, slot.output, parentIds.map((id) => (id !== null && repo.index.has(id) ? id : null)));
      }
      await turn;
      if (failure) return; // the backup is failing: nothing more goes into packs
      await packChunks(run, processed);
      for (const k of heldPages) pages.release(k);
    } finally {
      free.give(slot);
    }
  };

  const packChunks = async (run: number[], processed: ProcessedChunk[]): Promise<void> => {
    await indexReady;
    for (const [k, c] of processed.entries()) {
      const index = run[k]!;
      const n = chunkLength(size, chunkSize, index);
      if (c.zero) {
        pages.set(index, null);
        continue;
      }
      const id = c.id!;
      pages.set(index, id);
      const named = c.same || repo.index.has(id); // `same`: held by the index (see handle)
      const owner = named ? undefined : repo.inflight.ownerOf(id);
      if (named || owner !== undefined) {
        if (owner !== undefined && owner !== me) borrowed.note(id, index);
        stats.bytesReused += n;
        continue;
      }
      repo.inflight.claim(id, me);
      stats.bytesNew += n;
      await writer.add(id, c.encoded!, n);
    }
  };

  // A chunk reused from another backup of this process that is not stored by the end: read again
  // and stored here. The volume must still hold it (a snapshot does); if not, `CONFLICT`.
  const storeAgain = async (id: string, index: number): Promise<void> => {
    throwIfAborted(job.signal);
    const slot = await free.take(job.signal);
    try {
      const n = chunkLength(size, chunkSize, index);
      const into = slot.input.subarray(0, n);
      assertReadInto(device, await device.read(index * chunkSize, n, into), into, index * chunkSize, n);
      const [c] = await processor.process(slot.input.subarray(0, n), slot.output, [null]);
      if (c!.id !== id) throw new CairnError('CONFLICT', `chunk ${index} of volume ${job.volume.id} changed while it was backed up (read as ${id}, then as ${c!.id ?? 'zeros'})`);
      stats.bytesReused -= n;
      stats.bytesNew += n;
      await writer.add(id, c!.encoded!, n);
    } finally {
      free.give(slot);
    }
  };

  try {
    for (const batch of batchesIn(ranges, perUnit)) {
      if (failure || pages.failed) break;
      throwIfAborted(job.signal);
      // The batch's pages of the new chunk list (and of the parent's, for its ids) are loaded
      // before its data is read; batches come in chunk order, so pages below it are complete
      // once the batches in flight are done.
      // (A batch may join chunks far apart: only the pages of its chunks are held.)
      const heldPages = [...new Set(batch.map((i) => Math.floor(i / pages.pageChunks)))];
      pages.passTo(heldPages[0]!);
      for (const k of heldPages) {
        const held = pages.hold(k);
        if (held instanceof Promise) await held;
      }
      const parentIds = sameLayout ? await idsIn(parent!.chunks, batch) : batch.map(() => null);
      const slot = await free.take(job.signal);
      // The batch's chunks sit back to back in the slot; each run of consecutive ones is one read.
      // Only the volume's last chunk can be short, and it is always last in its batch.
      let length = 0;
      const reads: Promise<Buffer>[] = [];
      const intos: { offset: number; into: Buffer }[] = [];
      for (const run of runsOf(batch, perUnit)) {
        const offset = run[0]! * chunkSize;
        const n = Math.min(run.length * chunkSize, size - offset);
        const into = slot.input.subarray(length, length + n);
        intos.push({ offset, into });
        reads.push(device.read(offset, n, into));
        length += n;
      }
      const read = await Promise.allSettled(reads);
      const failed = read.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      try {
        if (failed) throw failed.reason;
        // The bytes must be in the slot, not in a buffer of the driver's: one comparison per read.
        for (const [k, { offset, into }] of intos.entries()) assertReadInto(device, (read[k] as PromiseFulfilledResult<Buffer>).value, into, offset, into.length);
      } catch (err) {
        free.give(slot);
        throw err;
      }
      stats.bytesRead += length;
      job.progress(stats.bytesRead, total);
      const p = handle(batch, slot, length, parentIds, heldPages, packed).catch((err) => {
        failure ??= err;
      });
      packed = p; // never rejects
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
    }
    await Promise.all(inflight);
    if (failure) throw failure;
    throwIfAborted(job.signal);
    await borrowed.secure(repo.inflight, me, writer, storeAgain);
    // The last pack and index object, and the chunk list's last pages, are written at once: the
    // manifest needs both durable, neither needs the other (one store round trip less at the end
    // of every backup, most of an incremental's tail). Both settle before either error is raised
    // (the writer's first): cleanup below never runs beside a finish still writing.
    const [packsDone, pagesDone] = await Promise.allSettled([writer.finish(), pages.finish()]);
    if (packsDone.status === 'rejected') throw packsDone.reason;
    if (pagesDone.status === 'rejected') throw pagesDone.reason;
    chunks = pagesDone.value;
    throwIfAborted(job.signal);
  } catch (err) {
    // Every cleanup runs and none throws (PackWriter.abandon, ChunkPageWriter.abandon): the
    // backup's own error is the one raised, whatever the store does with an abort.
    await Promise.allSettled(inflight);
    await writer.abandon();
    // Cancelled: page writes in flight are not waited for (the store may hang); none starts after.
    const pagesAbandoned = pages.abandon().catch(() => undefined);
    if (!job.signal?.aborted) await pagesAbandoned;
    throw err;
  } finally {
    job.signal?.removeEventListener('abort', cancel);
    giveSharedBuffer(arena); // every batch has settled: no worker holds a slot, the store never sees them
    repo.inflight.releaseAll(me); // named by now, or never to be: others store their own copy
  }

  stats.durationMs = Date.now() - started;
  const manifest: Manifest = {
    version: FORMAT_VERSION,
    backupId: job.backup.id,
    volumeId: job.volume.id,
    volumeName: job.volume.name,
    size,
    chunkSize,
    parentId: parent?.backupId,
    createdAt: job.backup.createdAt,
    chunks,
    volumeMetadata: { ...job.volume.metadata },
    vmConfig: job.vmConfig ? Buffer.from(job.vmConfig).toString('base64') : undefined,
    stats,
    record: { ...job.backup, size, status: 'available' },
  };
  options.lock?.assertHeld();
  const manifestBlob = await repo.writeManifest({ ...manifest, stats: { ...stats, bytesStored: writer.bytesStored + pages.bytesStored } }).catch((err) => {
    if (isCairnError(err) && err.code === 'ALREADY_EXISTS') throw new CairnError('CONFLICT', `backup id ${job.backup.id} already has a manifest`, { cause: err });
    throw err;
  });
  await stillHeldAfterManifest(repo, job.backup.id, manifestBlob, options.lock);
  stats.bytesStored = writer.bytesStored + pages.bytesStored + manifestBlob.length;
  return { result: { serviceData: { repository: repo.config.id, manifest: `manifests/${job.backup.id}` }, stats }, manifest };
}

/**
 * Checks `lock` again once backup `backupId`'s manifest (`blob`) landed. The lock lapses by time:
 * while its expiry as last refreshed, less the margin, is still ahead, no GC can have judged it
 * stale, so everything the manifest names is still stored. Once it has lapsed, a GC may have
 * deleted the backup's young packs and pages meanwhile: the manifest is withdrawn (only if it is
 * still this one) and the lock's error raised (`BUSY`), so the backup fails instead of publishing
 * a backup that cannot be restored. A manifest that cannot be withdrawn is said in the error.
 */
async function stillHeldAfterManifest(repo: Repository, backupId: string, blob: Buffer, lock: WriteOptions['lock']): Promise<void> {
  try {
    lock?.assertHeld();
  } catch (err) {
    const e = isCairnError(err) ? err : new CairnError('BUSY', String(err), { cause: err });
    const withdrawn = await repo.withdrawManifest(backupId, blob).then(
      (removed) => (removed ? 'its manifest, written once the lock had lapsed, was removed' : 'its manifest is no longer the one it wrote, and was left alone'),
      (failure: unknown) => `its manifest, written once the lock had lapsed, could not be removed (${String((failure as Error)?.message ?? failure)}): run repo verify`,
    );
    throw new CairnError(e.code, `backup ${backupId} failed: ${e.message}; ${withdrawn}`, { cause: err, details: { ...e.details, backupId } });
  }
}
