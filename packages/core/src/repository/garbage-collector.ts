import { CairnError, cancelledError, isCairnError, throwIfAborted } from '../errors.js';
import { eachUntilAborted, untilAborted } from '../util/until-aborted.js';
import { guardDroppedCopies } from './dropped-copies.js';
import { FETCH_BATCH } from './fetch-batches.js';
import { bytesCopiedForward, copyForward, type CopiedForward } from './gc-repack.js';
import { ChunkCodec } from './codec.js';
import { HEX_ID } from './chunk-id.js';
import { Keys } from './format.js';
import { PackWriter, writeIndexObject } from './pack-writer.js';
import { readPackTrailer } from './pack-trailer.js';
import type { IndexEntry, Manifest } from './format.js';
import type { Repository } from './repository.js';
import { manifestGone } from './manifest-gone.js';
import { deleteOrphanEntry, orphanVolumeEntries } from './repository-catalog.js';

/**
 * Leftovers younger than this are kept whatever the grace period: records and lock objects are
 * written outside the exclusive lock, and a live writer keeps its temporary file's mtime fresh
 * (the posix store refreshes it at least every minute while the file is open, however long the
 * writer waits between parts). Catalog volume entries too: a record's entry is written just
 * before the record, so a record being written right now has an entry without its record.
 */
const LEFTOVER_MIN_AGE_MS = 15 * 60_000;

/** A pack as the store's listing (or a head) gave it: its mtime (ms since the epoch) and size. */
interface ListedPack {
  modifiedAt: number;
  size: number;
}

export interface GcOptions {
  /** Packs younger than this are never removed (a backup elsewhere may be about to reference them). Default 1 hour. */
  graceMs?: number;
  /** Repack a pack when at least this share of its bytes is unreferenced. Default 0.25. */
  repackThreshold?: number;
  /**
   * Report what would be done without doing it: the same counts, and `bytesFreed` estimated (the
   * new packs' bytes from the sizes of the blobs copied forward, their trailers not counted: a real
   * run frees that much less). Default false.
   */
  dryRun?: boolean;
  signal?: AbortSignal;
  /**
   * Throws when the exclusive lock GC runs under has lapsed (LockHandle.assertHeld): called before
   * every delete, so a GC whose lock expired while it wrote (its refreshes failed: a full or
   * unreachable store) deletes nothing that a backup begun since may reuse.
   */
  assertHeld?: () => void;
}

export interface GcReport {
  backups: number;
  packsDeleted: number;
  packsRepacked: number;
  chunksRemoved: number;
  /**
   * What the store's packs shrank by: the sizes of the packs deleted (whole or repacked) minus
   * those of the new packs the repack wrote (index objects not counted). Below 0 when GC copied
   * forward more than it removed (chunks rescued from a damaged copy whose pack is in its grace
   * period). A dry run's is an estimate (GcOptions.dryRun).
   */
  bytesFreed: number;
  /**
   * Packs left alone because they are younger than the grace period: named packs holding an
   * unreferenced chunk, and packs no index object names (a backup still writing, or one killed
   * before naming them) that are not adopted.
   */
  packsInGrace: number;
  /**
   * Packs no index object named that hold chunks a backup references and no named pack holds
   * (left by a writer that died before naming them, or by an older Cairn that let other backups
   * reuse such chunks): named by a new index object instead of deleted.
   */
  packsAdopted: number;
  /** Chunk list pages (format 4) no manifest names, removed once older than the grace period. */
  pagesDeleted: number;
  /** Chunk list pages no manifest names left alone because they are younger than the grace period (a backup still writing, or one killed). */
  pagesInGrace: number;
  /** Catalog volume entries whose record is gone (left by a crash), removed once older than the grace period and at least 15 minutes old. */
  catalogEntriesDeleted: number;
  /**
   * Keys under `catalog/by-volume/` that are no volume entry (nested deeper, or not named
   * `<time>.<backup id>`: not written by Cairn). Left alone: GC deletes only what the catalog reads as an entry.
   */
  catalogKeysUnknown: number;
  /**
   * Keys under `packs/` that name no pack (the rest of the key is not a pack id, 64 lowercase hex
   * digits: a file not written by Cairn, or one in a subdirectory). Left alone: GC deletes only
   * what it reads as a pack.
   */
  packKeysUnknown: number;
  /** Keys under `chunklists/` that name no chunk list page (as packKeysUnknown). Left alone. */
  pageKeysUnknown: number;
  /**
   * Packs an index object names that the store lacks (deleted or lost behind Cairn's back): GC
   * drops them from the index (each of their chunks then resolves to a copy the store holds, if
   * any). Damage: once a GC that is no dry run has dropped them, a later GC no longer sees them, so
   * that run's report is the last to count them.
   */
  packsLost: number;
  /**
   * Chunks backups reference that no pack holds: none the index names once lost packs are
   * dropped, nor one adopted. Chunks of lost packs with no copy elsewhere, mostly; counted by
   * every GC while backups name them (not only the one that finds their pack lost). The backups
   * naming them cannot be restored whole: `repo verify` names those backups.
   */
  chunksLost: number;
  /**
   * What writers that died left in the store (the posix store's temporary files: a pack being
   * streamed, a put in progress), removed once older than the grace period and at least 15
   * minutes old; 0 in a dry run and for stores without the sweepsTemp capability.
   */
  leftoversDeleted: number;
  /**
   * Referenced chunks whose copy the index resolves to failed its checks (damaged, or its pack
   * short) when GC read it before dropping another copy, while another copy read well: GC copied
   * the chunk forward from the good copy and repacked the damaged copy's pack (unless in its grace
   * period); in a pass that writes no pack, it kept every pack holding a copy of it instead.
   */
  copiesDamaged: number;
  /**
   * Referenced chunks none of whose copies reads well, found when GC read them before dropping
   * another copy, or to copy them forward out of a pack it repacks (a damaged chunk stored once):
   * every pack holding a copy is left alone, and GC goes on with the others. Verify reports the
   * backups they break.
   */
  chunksUnreadable: number;
  /**
   * Packs past the grace period that GC would have repacked or deleted, kept whole instead for
   * holding a copy of a chunk counted in `chunksUnreadable` (its bytes stay for forensics).
   */
  packsLeftUnreadable: number;
}

/**
 * Removes chunks no manifest references and repacks mostly-empty packs. The caller holds the
 * repository's exclusive lock (ChunkedBackupService.gc takes it: `BUSY` while any backup holds its
 * shared lock) and releases it once this settles. Refuses (`CORRUPT`) when a
 * manifest cannot be read: it never deletes what it cannot prove unreferenced, nor a copy of a
 * referenced chunk before the copy it keeps has read well (dropped-copies.ts); a pack holding a
 * referenced chunk with no copy that reads well is kept whole, and GC goes on with the others
 * (gc-repack.ts, dropped-copies.ts: `chunksUnreadable`, `packsLeftUnreadable`). Order of effects:
 * an index object naming unnamed packs that hold chunks a manifest references and no named pack
 * holds (adopted, never deleted), new packs and their index object, then an index object naming the surviving packs of
 * every index object that named a removed pack or one the store lacks (lost: no reader resolves a
 * chunk to it again), then those old index objects, then old packs —
 * a crash leaves extra data, never missing data. Last, chunk list pages no manifest names,
 * catalog volume entries whose record is gone (and still is when each is deleted) and dead writers' leftovers in the store (where it
 * can sweep them), all past the grace period (the last two also at least 15 minutes old).
 * Memory: the chunks a repack copies forward are fetched a group of packs at a time, at most
 * `fetchBatch` chunks (FETCH_BATCH, as verify does) and REPACK_GROUP_BYTES of them held encoded
 * (gc-repack.ts), so memory stays bounded however many packs are repacked.
 */
export async function collectGarbage(repo: Repository, options: GcOptions = {}, fetchBatch = FETCH_BATCH): Promise<GcReport> {
  const grace = options.graceMs ?? 60 * 60_000;
  const threshold = options.repackThreshold ?? 0.25;
  const report: GcReport = { backups: 0, packsDeleted: 0, packsRepacked: 0, chunksRemoved: 0, bytesFreed: 0, packsInGrace: 0, packsAdopted: 0, pagesDeleted: 0, pagesInGrace: 0, catalogEntriesDeleted: 0, catalogKeysUnknown: 0, packKeysUnknown: 0, pageKeysUnknown: 0, packsLost: 0, chunksLost: 0, leftoversDeleted: 0, copiesDamaged: 0, chunksUnreadable: 0, packsLeftUnreadable: 0 };
  // The one-time upgrade of an older format, cancelled by GC's signal as every other store call before the deletes.
  if (!options.dryRun) await repo.upgradeFormat({ signal: options.signal });
  // The signal ends the refresh at once, whatever the store does, and a refresh it ended applies
  // nothing after the abort and forgets nothing (ChunkIndex.refresh): a cancelled GC leaves a view
  // the next refresh completes, and stops before anything that needs the store seen whole.
  await repo.index.refresh({ signal: options.signal });
  if (repo.index.damaged.size > 0) {
    // Verify of the whole repository reports each of them (verifier.ts), with the backups it breaks if any.
    throw new CairnError('CORRUPT', `index objects cannot be read: ${[...repo.index.damaged].map((id) => `index/${id}`).join(', ')}; run verify of the whole repository`);
  }
  const referenced = new Set<string>();
  const pages = new Set<string>(); // chunk list pages named by a manifest (read once each)
  // The manifests (and their pages) are GC's own reads: its signal ends them, however the store hangs.
  for (const backupId of await untilAborted(repo.listBackupIds({ signal: options.signal }), options.signal)) {
    const m = await readListedManifest(repo, backupId, options.signal); // CORRUPT or NOT_FOUND (a page) aborts the collection
    if (!m) continue; // deleted since it was listed: its chunks are unreferenced now
    report.backups++;
    for (let k = 0; k < m.chunks.pageCount; k++) {
      throwIfAborted(options.signal);
      const pageId = m.chunks.pageId(k);
      if (pageId) {
        if (pages.has(pageId)) continue;
        pages.add(pageId);
      }
      for (const id of (await m.chunks.page(k)).ids()) referenced.add(id);
    }
  }
  const now = Date.now();
  // Pages no manifest names: a backup that failed or was deleted. Young ones may belong to a
  // backup still running elsewhere.
  const deadPages: string[] = [];
  // Every listing and read before the deletes ends with CANCELLED at once when the signal aborts,
  // whatever the store does (one whose listing ignores the signal included).
  for await (const o of eachUntilAborted(repo.store.list(Keys.chunkLists, { signal: options.signal }), options.signal)) {
    const pageId = o.key.slice(Keys.chunkLists.length);
    if (!HEX_ID.test(pageId)) {
      report.pageKeysUnknown++; // not a page: never deleted
      continue;
    }
    if (pages.has(pageId)) continue;
    if (now - Date.parse(o.modifiedAt) >= grace) deadPages.push(pageId);
    else report.pagesInGrace++;
  }
  // Each pack's time and size, from the listing (or a head: lostPacks). The sizes serve
  // bytesFreed: no head per pack removed.
  const listed = new Map<string, ListedPack>();
  // A key whose rest is no pack id (a user's file, one in a subdirectory) is no pack: counted, never
  // deleted, as the catalog's unknown keys are.
  for await (const o of eachUntilAborted(repo.store.list(Keys.packs, { signal: options.signal }), options.signal)) {
    const packId = o.key.slice(Keys.packs.length);
    if (HEX_ID.test(packId)) listed.set(packId, { modifiedAt: Date.parse(o.modifiedAt), size: o.size });
    else report.packKeysUnknown++;
  }
  const sizeOf = (packId: string, signal?: AbortSignal): Promise<number> => {
    const size = listed.get(packId)?.size;
    return size === undefined ? headSize(repo, packId, signal) : Promise.resolve(size);
  };
  const old = (packId: string) => now - (listed.get(packId)?.modifiedAt ?? now) >= grace;
  // A pack the index names but the store lacks holds nothing to keep or delete (verify reports
  // the chunks it took along). It leaves the index, so that each of its chunks resolves to a
  // copy the store holds, if any: that copy is the live one, counted below and, when its pack
  // is repacked, fetched and copied forward (a repack takes what the index resolves to it).
  // The index objects naming it are rewritten below without it, as for a removed pack: else
  // every other process (and this one, once restarted) still resolves those chunks to it
  // first, and restores and verifies them as missing although a copy survives.
  const lost = await lostPacks(repo, listed, options.signal);
  for (const packId of lost) repo.index.remove(packId);
  report.packsLost = lost.size;
  const kept = new Set<string>(); // chunk ids with a surviving copy
  const toRepack = new Set<string>();
  const toDelete = new Set<string>();
  for (const [packId, entries] of repo.index.packs()) {
    throwIfAborted(options.signal);
    let live = 0;
    let liveBytes = 0;
    let total = 0;
    for (const e of entries) {
      total += e.length;
      if (referenced.has(e.id) && !kept.has(e.id)) {
        kept.add(e.id);
        live++;
        liveBytes += e.length;
      }
    }
    if (live === entries.length) continue;
    if (!old(packId)) {
      report.packsInGrace++;
      for (const e of entries) kept.add(e.id);
      continue;
    }
    if (live === 0) toDelete.add(packId);
    else if ((total - liveBytes) / total >= threshold) toRepack.add(packId);
  }
  // A chunk stored twice loses a copy when the pack holding it is deleted or repacked: the copy
  // kept is read first, and GC keeps a good copy when it fails (dropped-copies.ts). A threshold of
  // Infinity is a pass that writes no pack (ChunkedBackupService.collectOrDeleteOnly, `never`).
  const guarded = await guardDroppedCopies(repo, { referenced, toRepack, toDelete, old, repacks: Number.isFinite(threshold), signal: options.signal });
  report.copiesDamaged = guarded.damaged;
  // The repack's reads (in a dry run too, for the same counts) leave whole the packs holding a
  // chunk with no good copy, instead of stopping GC (gc-repack.ts).
  const repackPlan = { referenced, toRepack, toDelete, rescue: guarded.rescue, batch: fetchBatch, signal: options.signal };
  const counted = (forward: CopiedForward): void => {
    report.chunksUnreadable = guarded.unreadable + forward.unreadable.size;
    report.packsLeftUnreadable = new Set([...guarded.left, ...forward.left]).size;
  };
  counted({ unreadable: new Set(), left: new Set() });
  // Packs no index object names (a writer died before naming them) hold nothing reachable —
  // unless a manifest references a chunk no named pack holds: then the orphans that hold such
  // chunks are adopted (named again), and an orphan whose trailer cannot be read is kept.
  const indexed = repo.index.indexedPacks();
  const unnamed = [...listed.keys()].filter((p) => !indexed.has(p));
  const adopted = await adoptable(repo, unnamed, referenced, options.signal);
  const orphans = unnamed.filter((p) => old(p) && !adopted.keep.has(p));
  report.packsInGrace += unnamed.filter((p) => !old(p) && !adopted.keep.has(p)).length;
  const { orphans: orphanEntries, unknown: unknownCatalogKeys } = await orphanVolumeEntries(repo, Math.max(grace, LEFTOVER_MIN_AGE_MS), now, options.signal);
  report.packsAdopted = adopted.packs.length;
  // Lost: no copy in a pack the index names, nor in one adopted below (a dry run names none).
  const adoptedIds = new Set(adopted.packs.flatMap(([, entries]) => entries.map((e) => e.id)));
  for (const id of referenced) if (!repo.index.has(id) && !adoptedIds.has(id)) report.chunksLost++;
  report.catalogKeysUnknown = unknownCatalogKeys.length;
  if (options.dryRun) {
    if (toRepack.size > 0 || guarded.rescue.size > 0) counted(await copyForward(repo, repackPlan));
    report.packsDeleted = toDelete.size + orphans.length;
    report.packsRepacked = toRepack.size;
    report.pagesDeleted = deadPages.length;
    report.catalogEntriesDeleted = orphanEntries.length;
    // As a real run counts it, the new packs' blobs taken from the index's lengths (their trailers are not known).
    report.bytesFreed -= bytesCopiedForward(repo, repackPlan); // 0 - 0 is 0, never -0
    for (const packId of [...toRepack, ...toDelete, ...orphans]) {
      for (const e of repo.index.packs().get(packId) ?? []) if (!referenced.has(e.id)) report.chunksRemoved++;
      report.bytesFreed += await sizeOf(packId, options.signal);
    }
    return report;
  }
  // GC's index writes come before its deletes: they may spend the store's space reserve (spendReserve).
  if (adopted.packs.length > 0) await writeIndexObject(repo.store, repo.codec, repo.index, adopted.packs, options.signal, true);
  if (toRepack.size > 0 || guarded.rescue.size > 0) {
    let newPackBytes = 0;
    const writer = new PackWriter(repo.store, repo.codec, repo.index, repo.config.packSize, ChunkCodec.maxEncodedLength(repo.config.chunkSize), undefined, { stored: (_id, _entries, size) => void (newPackBytes += size) });
    // A cancel ends the writer's waits on the store and refuses every add after it: fetchChunks
    // returns at once when cancelled, while a call of the callback below may still be running.
    const cancel = (): void => writer.cancel(cancelledError(options.signal!, { message: 'gc cancelled' }));
    if (options.signal?.aborted) cancel();
    options.signal?.addEventListener('abort', cancel, { once: true });
    try {
      counted(await copyForward(repo, repackPlan, (id, blob, rawLength) => writer.add(id, blob, rawLength)));
      await writer.finish();
    } catch (err) {
      // The pack being filled is discarded (a store's part writer left open keeps its temporary
      // file alive); packs that landed are named or left as orphans. Nothing is deleted yet.
      await writer.abandon();
      throw err;
    } finally {
      options.signal?.removeEventListener('abort', cancel);
    }
    // bytesFreed is what the packs shrink by: the new packs count against the ones removed below.
    report.bytesFreed -= newPackBytes;
    report.packsRepacked = toRepack.size;
  }
  const removed = new Set([...toRepack, ...toDelete]);
  const held = (): void => options.assertHeld?.();
  if (removed.size > 0 || lost.size > 0) {
    // Index objects naming a removed or lost pack are replaced by one naming their other packs,
    // written before they are deleted: a crash in between leaves a pack named twice, never unnamed.
    const affected = repo.index.objectsNaming(new Set([...removed, ...lost]));
    const others = [...new Set([...affected.values()].flat())].filter((p) => !removed.has(p) && repo.index.packs().has(p) && listed.has(p));
    if (others.length > 0) await writeIndexObject(repo.store, repo.codec, repo.index, others.map((p) => [p, repo.index.packs().get(p)!]), undefined, true);
    for (const indexId of affected.keys()) {
      held();
      await repo.store.delete(Keys.index(indexId));
      repo.index.forgetObject(indexId);
    }
  }
  for (const packId of removed) {
    const entries = repo.index.packs().get(packId) ?? [];
    for (const e of entries) if (!referenced.has(e.id)) report.chunksRemoved++;
    report.bytesFreed += await sizeOf(packId);
    held();
    await repo.store.delete(Keys.pack(packId));
    repo.index.remove(packId);
    if (toDelete.has(packId)) report.packsDeleted++;
  }
  for (const packId of orphans) {
    report.bytesFreed += await sizeOf(packId);
    held();
    await repo.store.delete(Keys.pack(packId));
    report.packsDeleted++;
  }
  for (const pageId of deadPages) {
    held();
    await repo.store.delete(Keys.chunkList(pageId));
    report.pagesDeleted++;
  }
  for (const key of orphanEntries) {
    held();
    if (await deleteOrphanEntry(repo, key)) report.catalogEntriesDeleted++; // unless its record is back
  }
  // No backup runs under the exclusive lock, but records and locks are written without it: a
  // leftover is swept only once it is older than any live write could leave it.
  if (repo.store.capabilities.sweepsTemp && repo.store.sweepTemp) report.leftoversDeleted = await repo.store.sweepTemp(Math.max(grace, LEFTOVER_MIN_AGE_MS));
  return report;
}

/**
 * A listed backup's manifest, or undefined when it was deleted after the listing (deletes take
 * no lock), which manifestGone tells from a NOT_FOUND of a part it names. Any other
 * failure, a missing chunk list page among them, is raised. `signal` goes to the manifest's reads
 * and its pages' (`CANCELLED` at once: Repository.readManifest).
 */
async function readListedManifest(repo: Repository, backupId: string, signal: AbortSignal | undefined): Promise<Manifest | undefined> {
  try {
    return await repo.readManifest(backupId, { signal });
  } catch (err) {
    if (isCairnError(err) && err.code === 'NOT_FOUND' && (await manifestGone(repo, backupId))) return undefined;
    throw err;
  }
}

/**
 * Of the packs no index object names, those holding a referenced chunk that no named pack holds
 * (`packs`, with their trailers' entries: every such pack, not only the first holding each chunk,
 * since no copy of an unnamed pack is proven here and the first may be damaged; a later GC drops
 * the extra copies once it has proven the one it keeps, dropped-copies.ts), and those GC must not
 * delete (`keep`: the adoptable ones, and any whose trailer cannot be read while such chunks are
 * missing). Reads trailers (each unnamed pack's) only when a referenced chunk is missing from the index.
 */
async function adoptable(repo: Repository, unnamed: string[], referenced: ReadonlySet<string>, signal?: AbortSignal): Promise<{ packs: [string, IndexEntry[]][]; keep: Set<string> }> {
  const packs: [string, IndexEntry[]][] = [];
  const keep = new Set<string>();
  if (unnamed.length === 0) return { packs, keep };
  const sought = new Set<string>(); // referenced, in no named pack
  for (const id of referenced) if (!repo.index.has(id)) sought.add(id);
  if (sought.size === 0) return { packs, keep };
  const missing = new Set(sought); // sought, in no pack read so far
  const unreadable: string[] = [];
  for (const packId of unnamed) {
    throwIfAborted(signal);
    let entries: IndexEntry[];
    try {
      entries = await readPackTrailer(repo.store, repo.codec, packId, signal);
    } catch (err) {
      if (isCairnError(err) && err.code === 'NOT_FOUND') continue;
      if (!(isCairnError(err) && err.code === 'CORRUPT')) throw err;
      unreadable.push(packId);
      continue;
    }
    if (!entries.some((e) => sought.has(e.id))) continue;
    packs.push([packId, entries]);
    keep.add(packId);
    for (const e of entries) missing.delete(e.id);
  }
  // Still short of chunks: a pack that could not be read may hold them, so it is never deleted.
  if (missing.size > 0) for (const p of unreadable) keep.add(p);
  return { packs, keep };
}

/**
 * The packs the index or a known index object names that the store lacks: absent from its
 * listing (`listed`) and confirmed by a `head` (NOT_FOUND). One the listing missed but `head`
 * finds is added to `listed` (its time and size), and counts as present. Costs a head per pack the listing lacks
 * (normally none). `signal` goes to each head, and ends the call with `CANCELLED` at once when it
 * aborts, whatever the store does.
 */
async function lostPacks(repo: Repository, listed: Map<string, ListedPack>, signal: AbortSignal | undefined): Promise<Set<string>> {
  const lost = new Set<string>();
  for (const packId of new Set([...repo.index.packs().keys(), ...repo.index.indexedPacks()])) {
    if (listed.has(packId)) continue;
    throwIfAborted(signal);
    try {
      const info = await untilAborted(repo.store.head(Keys.pack(packId), { signal }), signal);
      listed.set(packId, { modifiedAt: Date.parse(info.modifiedAt), size: info.size });
    } catch (err) {
      if (!(isCairnError(err) && err.code === 'NOT_FOUND')) throw err;
      lost.add(packId);
    }
  }
  return lost;
}

/**
 * Pack `packId`'s size in the store, 0 when it is gone. `signal` (a dry run's: the deletes, once
 * begun, run to their end) goes to the head and ends the call with `CANCELLED` at once when it aborts.
 */
async function headSize(repo: Repository, packId: string, signal?: AbortSignal): Promise<number> {
  try {
    return (await untilAborted(repo.store.head(Keys.pack(packId), { signal }), signal)).size;
  } catch (err) {
    if (isCairnError(err) && err.code === 'NOT_FOUND') return 0;
    throw err;
  }
}
