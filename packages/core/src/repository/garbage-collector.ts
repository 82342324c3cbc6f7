import { CairnError, isCairnError, throwIfAborted } from '../errors.js';
import { fetchChunks } from './chunk-fetcher.js';
import { ChunkCodec } from './codec.js';
import { Keys } from './format.js';
import { PackWriter, writeIndexObject } from './pack-writer.js';
import type { Repository } from './repository.js';
import { orphanVolumeEntries } from './repository-catalog.js';

/**
 * Leftovers younger than this are kept whatever the grace period: records and lock objects are
 * written outside the exclusive lock, and a live writer touches its temporary file at every write
 * (a streamed pack at least every 1 MiB).
 */
const LEFTOVER_MIN_AGE_MS = 15 * 60_000;

export interface GcOptions {
  /** Packs younger than this are never removed (a backup elsewhere may be about to reference them). Default 1 hour. */
  graceMs?: number;
  /** Repack a pack when at least this share of its bytes is unreferenced. Default 0.25. */
  repackThreshold?: number;
  /** Report what would be done (same counts, bytes freed by repacks estimated from blob sizes) without doing it. Default false. */
  dryRun?: boolean;
  signal?: AbortSignal;
}

export interface GcReport {
  backups: number;
  packsDeleted: number;
  packsRepacked: number;
  chunksRemoved: number;
  bytesFreed: number;
  /** Packs left alone because they are younger than the grace period. */
  packsInGrace: number;
  /** Chunk list pages (format 4) no manifest names, removed once older than the grace period. */
  pagesDeleted: number;
  /** Catalog volume entries whose record is gone (left by a crash), removed once older than the grace period. */
  catalogEntriesDeleted: number;
  /**
   * What writers that died left in the store (the posix store's temporary files: a pack being
   * streamed, a put in progress), removed once older than the grace period and at least 15
   * minutes old; 0 in a dry run and for stores without the sweepsTemp capability.
   */
  leftoversDeleted: number;
}

/**
 * Removes chunks no manifest references and repacks mostly-empty packs, under the repository's
 * exclusive lock (`BUSY` while any backup holds its shared lock). Refuses (`CORRUPT`) when a
 * manifest cannot be read: it never deletes what it cannot prove unreferenced. Order of effects:
 * new packs and their index object first, then an index object naming the surviving packs of
 * every index object that named a removed pack, then those old index objects, then old packs —
 * a crash leaves extra data, never missing data. Last, chunk list pages no manifest names,
 * catalog volume entries whose record is gone and dead writers' leftovers in the store (where it
 * can sweep them), all past the grace period.
 */
export async function collectGarbage(repo: Repository, options: GcOptions = {}): Promise<GcReport> {
  const grace = options.graceMs ?? 60 * 60_000;
  const threshold = options.repackThreshold ?? 0.25;
  const lock = await repo.locks.acquire('exclusive', { purpose: 'gc', signal: options.signal });
  const report: GcReport = { backups: 0, packsDeleted: 0, packsRepacked: 0, chunksRemoved: 0, bytesFreed: 0, packsInGrace: 0, pagesDeleted: 0, catalogEntriesDeleted: 0, leftoversDeleted: 0 };
  try {
    if (!options.dryRun) await repo.upgradeFormat();
    await repo.index.refresh();
    if (repo.index.damaged.size > 0) {
      throw new CairnError('CORRUPT', `pack indexes cannot be read: ${[...repo.index.damaged].join(', ')}; run verify`);
    }
    const referenced = new Set<string>();
    const pages = new Set<string>(); // chunk list pages named by a manifest (read once each)
    for (const backupId of await repo.listBackupIds()) {
      const m = await repo.readManifest(backupId); // CORRUPT or NOT_FOUND (a page) aborts the collection
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
    for await (const o of repo.store.list(Keys.chunkLists)) {
      const pageId = o.key.slice(Keys.chunkLists.length);
      if (!pages.has(pageId) && now - Date.parse(o.modifiedAt) >= grace) deadPages.push(pageId);
    }
    const packTimes = new Map<string, number>();
    for await (const o of repo.store.list(Keys.packs)) packTimes.set(o.key.slice(Keys.packs.length), Date.parse(o.modifiedAt));
    const old = (packId: string) => now - (packTimes.get(packId) ?? now) >= grace;
    const kept = new Set<string>(); // chunk ids with a surviving copy
    const toRepack: string[] = [];
    const toDelete: string[] = [];
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
      if (live === 0) toDelete.push(packId);
      else if ((total - liveBytes) / total >= threshold) toRepack.push(packId);
    }
    // Packs no index object names (a writer died before naming them) hold nothing reachable.
    const indexed = repo.index.indexedPacks();
    const orphans = [...packTimes.keys()].filter((p) => !indexed.has(p) && old(p));
    const orphanEntries = await orphanVolumeEntries(repo, grace, now);
    if (options.dryRun) {
      report.packsDeleted = toDelete.length + orphans.length;
      report.packsRepacked = toRepack.length;
      report.pagesDeleted = deadPages.length;
      report.catalogEntriesDeleted = orphanEntries.length;
      for (const packId of [...toRepack, ...toDelete]) {
        for (const e of repo.index.packs().get(packId) ?? []) if (!referenced.has(e.id)) report.chunksRemoved++;
        if (toDelete.includes(packId)) report.bytesFreed += await sizeOf(repo, packId);
        else for (const e of repo.index.packs().get(packId) ?? []) if (!referenced.has(e.id)) report.bytesFreed += e.length;
      }
      for (const packId of orphans) report.bytesFreed += await sizeOf(repo, packId);
      return report;
    }
    if (toRepack.length > 0) {
      const writer = new PackWriter(repo.store, repo.codec, repo.index, repo.config.packSize, ChunkCodec.maxEncodedLength(repo.config.chunkSize));
      const wanted = new Set<string>();
      for (const p of toRepack) for (const e of repo.index.packs().get(p)!) if (referenced.has(e.id) && repo.index.get(e.id)?.pack === p) wanted.add(e.id);
      // Re-encode from checked plaintext so corruption is never copied forward.
      await fetchChunks(repo, wanted, async (chunks) => {
        for (const { id, data } of chunks) await writer.add(id, repo.codec.encode(data, repo.config.compression, id), data.length);
      }, { signal: options.signal });
      await writer.finish();
      report.packsRepacked = toRepack.length;
    }
    const removed = new Set([...toRepack, ...toDelete]);
    if (removed.size > 0) {
      // Index objects naming a removed pack are replaced by one naming their other packs, written
      // before they are deleted: a crash in between leaves a pack named twice, never unnamed.
      const affected = repo.index.objectsNaming(removed);
      const others = [...new Set([...affected.values()].flat())].filter((p) => !removed.has(p) && repo.index.packs().has(p));
      if (others.length > 0) await writeIndexObject(repo.store, repo.codec, repo.index, others.map((p) => [p, repo.index.packs().get(p)!]));
      for (const indexId of affected.keys()) {
        await repo.store.delete(Keys.index(indexId));
        repo.index.forgetObject(indexId);
      }
    }
    for (const packId of removed) {
      const entries = repo.index.packs().get(packId) ?? [];
      for (const e of entries) if (!referenced.has(e.id)) report.chunksRemoved++;
      report.bytesFreed += await sizeOf(repo, packId);
      await repo.store.delete(Keys.pack(packId));
      repo.index.remove(packId);
      if (toDelete.includes(packId)) report.packsDeleted++;
    }
    for (const packId of orphans) {
      report.bytesFreed += await sizeOf(repo, packId);
      await repo.store.delete(Keys.pack(packId));
      report.packsDeleted++;
    }
    for (const pageId of deadPages) {
      await repo.store.delete(Keys.chunkList(pageId));
      report.pagesDeleted++;
    }
    for (const key of orphanEntries) {
      await repo.store.delete(key);
      report.catalogEntriesDeleted++;
    }
    // No backup runs under the exclusive lock, but records and locks are written without it: a
    // leftover is swept only once it is older than any live write could leave it.
    if (repo.store.capabilities.sweepsTemp && repo.store.sweepTemp) report.leftoversDeleted = await repo.store.sweepTemp(Math.max(grace, LEFTOVER_MIN_AGE_MS));
    return report;
  } finally {
    await lock.release();
  }
}

async function sizeOf(repo: Repository, packId: string): Promise<number> {
  try {
    return (await repo.store.head(Keys.pack(packId))).size;
  } catch (err) {
    if (isCairnError(err) && err.code === 'NOT_FOUND') return 0;
    throw err;
  }
}
