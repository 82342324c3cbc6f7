import type { ByteRange, Extent } from '../contracts/block-device.js';
import { CairnError, throwIfAborted } from '../errors.js';
import { untilAborted } from '../util/until-aborted.js';
import { assertRange } from '../util/validate.js';
import { fetchChunks } from './chunk-fetcher.js';
import { chunkLength } from './chunk-plan.js';
import type { Manifest } from './format.js';
import type { ChunkWindow } from './chunk-map.js';
import type { ChunkList } from './chunk-list.js';
import type { Repository } from './repository.js';

/** A chunk that a fetch ended without delivering or failing (fetchChunks' contract broken). */
const lost = (id: string): CairnError => new CairnError('INTERNAL', `chunk fetch ended without delivering chunk ${id}`, { details: { chunk: id } });

export interface BackupReaderOptions {
  /** Chunks kept decoded in memory (LRU). Default 64. */
  cacheChunks?: number;
  /** Chunks fetched ahead when reads go forward. Default 16. */
  readAhead?: number;
}

export interface BackupReaderOpenOptions extends BackupReaderOptions {
  /**
   * Ends the open (the caller is gone): aborted, it rejects with `CANCELLED` at once, whatever
   * the store does. A read of the manifest in flight goes on until the store answers, unawaited;
   * the index refresh stops as ChunkIndex.refresh does with a signal (the next refresh completes
   * the view). Not kept: the reader's reads take their own (BackupReadOptions).
   */
  signal?: AbortSignal;
}

export interface BackupReadOptions {
  /**
   * Ends the read (a client gone): aborted, it rejects with `CANCELLED` at once, whatever the
   * store does, holding no buffer of its own. readRange also ends its fetch (no range is read
   * after the abort; see fetchChunks for the memory a hung get keeps); read leaves running the
   * fetches it shares with other reads through the chunk cache and read-ahead.
   */
  signal?: AbortSignal;
}

/**
 * Random access to one backup's bytes straight from the repository, without restoring it: the
 * basis of serving a backup as an NBD export. Chunks are fetched on demand, checked against their
 * ids, kept in a bounded LRU cache, and read ahead for sequential access. A damaged chunk fails
 * the read that needs it with `CORRUPT` (never wrong bytes); others stay readable. Safe for
 * concurrent reads. The errors of a chunk (and of a chunk list page) name the backup in their
 * message and as `details.backupId`, next to the chunk's own details.
 */
export class BackupReader {
  private readonly cache = new Map<number, Promise<Buffer>>();
  private readonly cacheChunks: number;
  private readonly readAhead: number;
  private lastChunk = -2;

  private constructor(
    private readonly repo: Repository,
    readonly manifest: Manifest,
    options: BackupReaderOptions,
  ) {
    this.cacheChunks = Math.max(4, options.cacheChunks ?? 64);
    this.readAhead = Math.max(0, Math.min(options.readAhead ?? 16, this.cacheChunks / 2));
  }

  /**
   * `NOT_FOUND`/`CORRUPT` for a missing or damaged manifest. `CANCELLED` at once when
   * `options.signal` aborts (see BackupReaderOpenOptions), whatever the store does.
   */
  static async open(repo: Repository, backupId: string, options: BackupReaderOpenOptions = {}): Promise<BackupReader> {
    const { signal, ...readerOptions } = options;
    throwIfAborted(signal);
    // The manifest is the reader's, read later by every read (its chunk list pages): the signal
    // ends the wait for it, never binds its later page reads (Repository.readManifest's signal would).
    const manifest = await untilAborted(repo.readManifest(backupId), signal);
    await repo.index.refresh({ signal });
    return new BackupReader(repo, manifest, readerOptions);
  }

  get size(): number {
    return this.manifest.size;
  }

  get chunkSize(): number {
    return this.manifest.chunkSize;
  }

  /**
   * Reads `length` bytes at `offset`. `INVALID_INPUT` outside the backup; `CORRUPT`/`NOT_FOUND`
   * for bad data; `CANCELLED` (options.signal).
   */
  async read(offset: number, length: number, options: BackupReadOptions = {}): Promise<Buffer> {
    assertRange(offset, length, this.size);
    const { signal } = options;
    throwIfAborted(signal);
    if (length === 0) return Buffer.alloc(0);
    const first = Math.floor(offset / this.chunkSize);
    const last = Math.floor((offset + length - 1) / this.chunkSize);
    const window = await untilAborted(this.manifest.chunks.window(first, last + 1), signal);
    // Every chunk of the range that is neither cached nor zero is fetched in one batch.
    const missing: number[] = [];
    for (let i = first; i <= last; i++) if (!window.isZero(i) && !this.cache.has(i)) missing.push(i);
    if (missing.length > 0) this.load(missing, window);
    await untilAborted(this.prefetch(first, last), signal);
    const indexes = Array.from({ length: last - first + 1 }, (_, k) => first + k);
    // Zero chunks read as the zeros `out` starts with. `out` exists only once every chunk is
    // here: a read cancelled while a fetch hangs holds none of its bytes.
    const chunks = await untilAborted(Promise.all(indexes.map((i) => (window.isZero(i) ? undefined : this.chunk(i, window)))), signal);
    const out = Buffer.alloc(length);
    chunks.forEach((data, k) => {
      if (!data) return;
      const chunkStart = (first + k) * this.chunkSize;
      const from = Math.max(offset, chunkStart);
      const to = Math.min(offset + length, chunkStart + data.length);
      data.copy(out, from - offset, from - chunkStart, to - chunkStart);
    });
    return out;
  }

  /**
   * Reads `length` bytes at `offset` into `into` (default: a new buffer) in one batch, bypassing
   * the chunk cache: every chunk the range touches is fetched at once (ranged gets coalesced per
   * pack), checked, and copied straight to its place; zero chunks are written as zeros. Meant
   * for large sequential reads (an export reading ahead in windows), where the cache would only
   * add a copy. `INVALID_INPUT` outside the backup; `CORRUPT`/`NOT_FOUND` naming the backup for
   * bad data (then `into` holds garbage); `INTERNAL` when the fetch ended without delivering or
   * failing some chunk (never bytes the range was not given); `CANCELLED` (options.signal; `into`
   * may then still be written to by a fetch in flight, until the store's get returns).
   */
  async readRange(offset: number, length: number, into: Buffer = Buffer.allocUnsafe(length), options: BackupReadOptions = {}): Promise<Buffer> {
    assertRange(offset, length, this.size);
    if (into.length < length) throw new CairnError('INVALID_INPUT', `buffer of ${into.length} bytes cannot hold ${length}`);
    const { signal } = options;
    throwIfAborted(signal);
    const out = into.subarray(0, length);
    if (length === 0) return out;
    const cs = this.chunkSize;
    const byId = new Map<string, number[]>();
    const window = await untilAborted(this.manifest.chunks.window(Math.floor(offset / cs), Math.ceil((offset + length) / cs)), signal);
    for (let i = Math.floor(offset / cs); i * cs < offset + length; i++) {
      const from = Math.max(offset, i * cs) - offset;
      const to = Math.min(offset + length, (i + 1) * cs) - offset;
      const id = window.get(i);
      if (id === null) {
        out.fill(0, from, to);
        continue;
      }
      const list = byId.get(id);
      if (list) list.push(i);
      else byId.set(id, [i]);
    }
    let failure: { id: string; err: CairnError } | undefined;
    // Ids neither delivered nor failed yet: what is left once the fetch ends was never written
    // into `out` (fetchChunks hands over or fails each, so only a bug leaves one).
    const undelivered = new Set(byId.keys());
    await fetchChunks(
      this.repo,
      byId.keys(),
      async (chunks) => {
        for (const { id, data } of chunks) {
          undelivered.delete(id);
          for (const i of byId.get(id)!) {
            if (data.length !== this.lengthAt(i)) {
              failure ??= { id, err: this.misfit(id, i, data.length) };
              continue;
            }
            const start = i * cs;
            const from = Math.max(offset, start);
            const to = Math.min(offset + length, start + data.length);
            data.copy(out, from - offset, from - start, to - start);
          }
        }
      },
      { onError: (id, err) => void (undelivered.delete(id), (failure ??= { id, err })), signal },
    );
    if (failure) throw this.named(failure.err, failure.id);
    for (const id of undelivered) throw this.named(lost(id), id);
    return out;
  }

  /**
   * Ranges holding data (non-zero chunks) inside `range`; everything else reads as zeros.
   * `NOT_FOUND`/`CORRUPT` naming the backup when a page of its chunk list cannot be read.
   * `CANCELLED` at once when `options.signal` aborts, whatever the store does: a page read in
   * flight goes on (pages are shared with other reads through the chunk list's cache), no other
   * page is read for this call.
   */
  async allocated(range: ByteRange = { offset: 0, length: this.size }, options: BackupReadOptions = {}): Promise<Extent[]> {
    const { signal } = options;
    throwIfAborted(signal);
    const out: Extent[] = [];
    const first = Math.floor(range.offset / this.chunkSize);
    const end = range.offset + range.length;
    const { pageChunks } = this.manifest.chunks;
    // A page at a time: a range may span the whole volume (a client mapping a 1 TiB backup).
    let page: ChunkList | undefined;
    for (let i = first; i * this.chunkSize < end && i < this.manifest.chunks.length; i++) {
      if (!page || i % pageChunks === 0) page = await untilAborted(this.manifest.chunks.page(Math.floor(i / pageChunks)), signal);
      if (page.isZero(i % pageChunks)) continue;
      const start = Math.max(range.offset, i * this.chunkSize);
      const stop = Math.min(end, (i + 1) * this.chunkSize, this.size);
      const prev = out[out.length - 1];
      if (prev && prev.offset + prev.length === start) prev.length += stop - start;
      else out.push({ offset: start, length: stop - start });
    }
    return out;
  }

  /** Fetches and caches chunks ahead of a forward-moving reader (errors surface when read). */
  private async prefetch(first: number, last: number): Promise<void> {
    const sequential = first <= this.lastChunk + 1 && last >= this.lastChunk;
    this.lastChunk = last;
    if (!sequential || this.readAhead === 0) return;
    const end = Math.min(last + 1 + this.readAhead, this.manifest.chunks.length);
    // A page of the chunk list that cannot be read only stops the read-ahead; the read that
    // needs it fails.
    const window = await this.manifest.chunks.window(last + 1, end).catch(() => undefined);
    if (!window) return;
    const wanted: number[] = [];
    for (let i = last + 1; i < end; i++) if (!window.isZero(i) && !this.cache.has(i)) wanted.push(i);
    if (wanted.length > 0) this.load(wanted, window);
  }

  private chunk(index: number, window: ChunkWindow): Promise<Buffer> {
    const hit = this.cache.get(index);
    if (hit) {
      this.cache.delete(index); // refresh LRU position
      this.cache.set(index, hit);
      return hit;
    }
    this.load([index], window);
    return this.cache.get(index)!;
  }

  /** Plaintext bytes chunk `i` must have: the chunk size, or what is left for a short last one. */
  private lengthAt(i: number): number {
    return chunkLength(this.size, this.chunkSize, i);
  }

  private misfit(id: string, i: number, length: number): CairnError {
    return new CairnError('CORRUPT', `chunk ${id} has ${length} bytes where ${this.lengthAt(i)} belong`, { details: { chunk: id } });
  }

  /** Starts one batched fetch for `indexes` (non-zero chunks of `window`), caching a promise per index. */
  private load(indexes: number[], window: ChunkWindow): void {
    const byId = new Map<string, number[]>();
    for (const i of indexes) {
      const id = window.get(i)!;
      byId.set(id, [...(byId.get(id) ?? []), i]);
    }
    // Each index's promise, until settled (then taken out: what is left at the end was lost).
    const settle = new Map<number, { resolve: (b: Buffer) => void; reject: (e: unknown) => void }>();
    const take = (i: number) => {
      const s = settle.get(i);
      settle.delete(i);
      return s;
    };
    for (const i of indexes) {
      const p = new Promise<Buffer>((resolve, reject) => settle.set(i, { resolve, reject }));
      // A failed chunk is retried on the next read: its promise leaves the cache, unless evicted
      // already and replaced by a newer fetch of the chunk, which stays.
      p.catch(() => void (this.cache.get(i) === p && this.cache.delete(i)));
      this.cache.set(i, p);
    }
    const errors = new Map<string, CairnError>();
    fetchChunks(
      this.repo,
      byId.keys(),
      async (chunks) => {
        for (const { id, data } of chunks) {
          for (const i of byId.get(id)!) {
            if (data.length === this.lengthAt(i)) take(i)?.resolve(Buffer.from(data));
            else take(i)?.reject(this.named(this.misfit(id, i, data.length), id));
          }
        }
      },
      { onError: (id, err) => errors.set(id, err) },
    )
      .catch((err) => {
        for (const i of [...settle.keys()]) take(i)!.reject(err);
      })
      .finally(() => {
        for (const [id, err] of errors) {
          const e = this.named(err, id);
          for (const i of byId.get(id)!) take(i)?.reject(e);
        }
        // Only a chunk that was neither delivered nor failed is left.
        for (const i of [...settle.keys()]) {
          const id = window.get(i)!;
          take(i)!.reject(this.named(lost(id), id));
        }
        this.evict();
      });
  }

  /** Chunk `chunk`'s error, naming this backup (in its message and `details.backupId`) and the chunk (`details.chunk`). */
  private named(err: CairnError, chunk: string): CairnError {
    const backupId = this.manifest.backupId;
    return new CairnError(err.code, `backup ${backupId}: ${err.message}`, { cause: err, details: { chunk, ...err.details, backupId } });
  }

  private evict(): void {
    while (this.cache.size > this.cacheChunks) {
      const oldest = this.cache.keys().next().value as number;
      this.cache.delete(oldest);
    }
  }
}
