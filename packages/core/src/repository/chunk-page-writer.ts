/**
 * Builds a new backup's chunk list a page at a time while the backup runs, so that its memory
 * is the pages in flight, not the volume's. See chunk-map.ts for the pages' format.
 */
import type { ObjectStore } from '../contracts/object-store.js';
import { ChunkList } from './chunk-list.js';
import { ChunkMap, PAGE_CHUNKS, readPage, writePage } from './chunk-map.js';
import type { ChunkCodec } from './codec.js';
import { untilAborted } from '../util/until-aborted.js';

interface OpenPage {
  ready: Promise<ChunkList>;
  /** The page, once ready. */
  list?: ChunkList;
  /** Batches that hold the page (hold → release). */
  holds: number;
}

/**
 * Usage: for each batch of chunks, in ascending chunk order, `passTo` its first page, then
 * `hold` every page it touches, `set` its chunks' ids and `release` the pages; then `finish`.
 * A page is written once the batches have passed it and none holds it. Pages never held are
 * the base's (the parent's, for an incremental with changed-block tracking: its unchanged
 * pages are named again, not rewritten) or, with no base, zero.
 *
 * Pages may be written before the chunks they name are stored: they are unreferenced until the
 * manifest is written, which comes last.
 */
export class ChunkPageWriter {
  private readonly open = new Map<number, OpenPage>();
  private readonly ids: (string | null | undefined)[];
  private readonly writes = new Set<Promise<void>>();
  private passed = 0;
  private failure: unknown;
  private abandoned = false;
  /** Bytes of the pages this writer stored (pages already present count 0). */
  bytesStored = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly codec: ChunkCodec,
    private readonly backupId: string,
    /** Chunks in the backup. */
    readonly length: number,
    /** Chunks copied where the backup does not set them (the parent's, same chunk size); none: zero. */
    private readonly base?: ChunkMap,
    readonly pageChunks = PAGE_CHUNKS,
    /** The backup's: goes to the store's calls for pages (ObjectStore CallOptions). */
    private readonly signal?: AbortSignal,
  ) {
    this.ids = new Array<string | null | undefined>(Math.ceil(length / pageChunks)).fill(undefined);
  }

  /** The first error of a page write, once one failed. */
  get failed(): unknown {
    return this.failure;
  }

  /**
   * Page `k`, loaded from the base when there is one, held until `release(k)`. The page itself
   * when it is open and ready already (no await per batch on the hot path), else a promise.
   */
  hold(k: number): ChunkList | Promise<ChunkList> {
    let page = this.open.get(k);
    if (!page) {
      const opened: OpenPage = { ready: this.start(k), holds: 0 };
      opened.ready.then((list) => (opened.list = list)).catch(() => undefined); // errors are raised to the holder
      this.open.set(k, (page = opened));
    }
    page.holds++;
    return page.list ?? page.ready;
  }

  /** Sets chunk `i` to `id`, or to zero. Its page must be held, and `hold` settled. */
  set(i: number, id: string | null): void {
    const k = Math.floor(i / this.pageChunks);
    const list = this.open.get(k)?.list;
    if (!list) throw new RangeError(`page ${k} of chunk ${i} is not held and ready`);
    list.set(i - k * this.pageChunks, id);
  }

  release(k: number): void {
    const page = this.open.get(k);
    if (!page || page.holds === 0) throw new RangeError(`page ${k} is not held`);
    page.holds--;
    this.flush(k);
  }

  /** No later batch touches a page below `k`. */
  passTo(k: number): void {
    const before = this.passed;
    this.passed = Math.max(this.passed, k);
    for (const open of [...this.open.keys()]) if (open >= before && open < this.passed) this.flush(open);
  }

  /**
   * Writes what is left and returns the map of the backup's pages. Throws the first page write's
   * error; `CANCELLED` as soon as `signal` is aborted, without waiting for page writes in flight
   * (a store that does not heed the signal may never settle them; they are unreferenced).
   */
  async finish(): Promise<ChunkMap> {
    this.passTo(this.ids.length);
    await untilAborted(this.settle(), this.signal);
    if (this.failure) throw this.failure;
    for (let k = 0; k < this.ids.length && !this.failure; k++) {
      if (this.ids[k] !== undefined) continue;
      const length = Math.min(this.pageChunks, this.length - k * this.pageChunks);
      const reused = this.base?.pageChunks === this.pageChunks ? this.base.pageId(k) : undefined;
      if (!this.base) this.ids[k] = null;
      else if (reused !== undefined && this.base.pageLength(k) === length) this.ids[k] = reused;
      else {
        this.hold(k);
        this.release(k);
        await untilAborted(this.settle(), this.signal);
      }
    }
    if (this.failure) throw this.failure;
    const ids = this.ids as (string | null)[];
    return ChunkMap.paged(this.backupId, this.length, this.pageChunks, ids, (id) => readPage(this.store, this.codec, id));
  }

  /** Starts no more page writes and waits for those in flight (after a failure elsewhere). Never throws. */
  async abandon(): Promise<void> {
    this.abandoned = true;
    await this.settle();
  }

  private async settle(): Promise<void> {
    while (this.writes.size > 0) await Promise.allSettled([...this.writes]);
  }

  /** A new page: the base's chunks where it has them, else zero. */
  private async start(k: number): Promise<ChunkList> {
    const first = k * this.pageChunks;
    const page = new ChunkList(Math.min(this.pageChunks, this.length - first));
    if (!this.base || first >= this.base.length) return page;
    if (this.base.pageChunks === this.pageChunks) {
      page.copyFrom(await this.base.page(k), page.length);
      return page;
    }
    const w = await this.base.window(first, first + page.length);
    for (let i = 0; i < page.length && first + i < this.base.length; i++) page.set(i, w.get(first + i));
    return page;
  }

  /** Writes page `k` once the batches have passed it and none holds it; after a failure, writes nothing more. */
  private flush(k: number): void {
    const page = this.open.get(k);
    if (!page || page.holds > 0 || k >= this.passed) return;
    this.open.delete(k);
    if (this.failure || this.abandoned) return;
    const write = page.ready
      .then((list) => writePage(this.store, this.codec, list, this.signal))
      .then(({ id, stored }) => {
        this.ids[k] = id;
        this.bytesStored += stored;
      })
      .catch((err) => void (this.failure ??= err))
      .finally(() => this.writes.delete(write));
    this.writes.add(write);
  }
}
