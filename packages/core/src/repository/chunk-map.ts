/**
 * A backup's chunk list, held a page at a time (repository format 4). A manifest names one chunk
 * list page per PAGE_CHUNKS chunks of the volume; each page is its own object, content-addressed
 * (`chunklists/<id>`, the id computed like a chunk's over the page's JSON text), so an
 * incremental whose page did not change names its parent's page without writing it, and memory
 * for a backup's chunk list stays a few pages whatever the volume's size. A manifest of format 3
 * or older keeps its list inline; it is served through the same interface from memory.
 */
import type { ObjectStore } from '../contracts/object-store.js';
import { CairnError, isCairnError } from '../errors.js';
import { untilAborted } from '../util/until-aborted.js';
import { ChunkList } from './chunk-list.js';
import { jsonPieces, openDocument, sealPieces, type ChunkCodec } from './codec.js';
import { Keys } from './format.js';

/**
 * Chunks per page: 512 MiB of volume at the default 128 KiB chunks. A page takes 135 KiB in
 * memory (33 bytes a chunk), about 270 KiB as JSON and 140 KiB stored.
 */
export const PAGE_CHUNKS = 4096;
/** Pages a ChunkMap keeps after use: a restore window (1 GiB) spans two at the default sizes. */
const CACHED_PAGES = 4;

/** Label under which page `id` is sealed. */
export const pageLabel = (id: string): string => `chunklist:${id}`;

/** How the text Cairn writes starts (pageJson), for reading it without building the JSON tree. */
const PAGE_HEAD = Buffer.from('{"chunks":[', 'latin1');

/**
 * A page's JSON text: `{"chunks":[…]}`, the ids and nulls as a manifest of format 3 held them,
 * written by the manifests' serializer (each piece copied before the next reuses its buffer).
 */
export function pageJson(list: ChunkList): Buffer {
  return Buffer.concat(Array.from(jsonPieces({ chunks: list }, 'chunks'), (piece) => Buffer.from(piece)));
}

/**
 * Writes a page and returns its id and stored size (0 when a good copy was there already), or
 * null for a page of zero chunks, which is never stored. A page with the same id holds the same
 * list, so one stored already is reused, but only once read back and found to hold exactly this
 * text (a full page is about 140 KiB stored: 4 per 2 GiB of volume); one that is damaged (its
 * seal or text wrong, or cut) is overwritten with the good bytes, so that no new backup names a
 * damaged page, and the backups that named it already read well again. `signal` goes to the store's get and
 * put (ObjectStore CallOptions), and the read rejects `CANCELLED` once it aborts.
 */
export async function writePage(store: ObjectStore, codec: ChunkCodec, list: ChunkList, signal?: AbortSignal): Promise<{ id: string | null; stored: number }> {
  let any = false;
  for (let i = 0; i < list.length && !any; i++) any = !list.isZero(i);
  if (!any) return { id: null, stored: 0 };
  const json = pageJson(list);
  const id = codec.chunkId(json);
  const key = Keys.chunkList(id);
  // A page stored already (an incremental that changed nothing in it) costs a read, not a
  // durable write that the store then refuses.
  const found = await storedPage(store, codec, id, json, signal);
  if (found === 'good') return { id, stored: 0 };
  const blob = sealPieces(codec, () => [json], pageLabel(id));
  if (found === 'damaged') {
    await store.put(key, blob, { signal }); // the same id, the bytes it should have had
    return { id, stored: blob.length };
  }
  try {
    await store.put(key, blob, { ifAbsent: true, signal });
    return { id, stored: blob.length };
  } catch (err) {
    // Another writer stored it meanwhile: whole (puts are atomic), from the same text.
    if (isCairnError(err) && err.code === 'ALREADY_EXISTS') return { id, stored: 0 };
    throw err;
  }
}

/** Whether page `id` is stored holding exactly `json` ('good'), is absent, or is stored damaged. */
async function storedPage(store: ObjectStore, codec: ChunkCodec, id: string, json: Buffer, signal?: AbortSignal): Promise<'good' | 'absent' | 'damaged'> {
  let blob: Buffer;
  try {
    blob = await untilAborted(store.get(Keys.chunkList(id), undefined, { signal }), signal);
  } catch (err) {
    if (isCairnError(err) && err.code === 'NOT_FOUND') return 'absent';
    throw err;
  }
  try {
    return openDocument(codec, blob, pageLabel(id)).equals(json) ? 'good' : 'damaged';
  } catch (err) {
    if (isCairnError(err) && err.code === 'CORRUPT') return 'damaged';
    throw err;
  }
}

/**
 * Reads page `id`, checked against its id. `NOT_FOUND` when absent, `CORRUPT` when damaged; the
 * caller names the backup. `signal` goes to the store's get (ObjectStore CallOptions), and the
 * read rejects `CANCELLED` once it aborts even when the store goes on (util/until-aborted).
 */
export async function readPage(store: ObjectStore, codec: ChunkCodec, id: string, signal?: AbortSignal): Promise<ChunkList> {
  let blob: Buffer;
  try {
    blob = await untilAborted(store.get(Keys.chunkList(id), undefined, { signal }), signal);
  } catch (err) {
    if (isCairnError(err) && err.code === 'NOT_FOUND') throw new CairnError('NOT_FOUND', `chunk list page ${id} is missing`, { cause: err, details: { page: id } });
    throw err;
  }
  const json = openDocument(codec, blob, pageLabel(id)); // CORRUPT when the seal fails
  try {
    if (codec.chunkId(json) !== id) throw new Error('content does not match its id');
    if (json.subarray(0, PAGE_HEAD.length).equals(PAGE_HEAD)) {
      const scanned = ChunkList.scan(json, PAGE_HEAD.length - 1);
      if (scanned && scanned.end === json.length - 1 && json[scanned.end] === 0x7d) return scanned.list;
    }
    const doc = JSON.parse(json.toString('utf8')) as { chunks?: unknown };
    if (!doc || typeof doc !== 'object' || !Array.isArray(doc.chunks)) throw new Error('page has no chunk list');
    return ChunkList.from(doc.chunks);
  } catch (cause) {
    throw new CairnError('CORRUPT', `chunk list page ${id} is damaged: ${(cause as Error).message}`, { cause, details: { page: id } });
  }
}

/** Chunks [first, end) of a ChunkMap, with their pages in memory: synchronous lookups. */
export class ChunkWindow {
  constructor(
    private readonly pages: readonly ChunkList[],
    private readonly firstPage: number,
    private readonly pageChunks: number,
  ) {}

  /** The id of chunk `i` (inside the window), or null for a zero chunk. */
  get(i: number): string | null {
    const k = Math.floor(i / this.pageChunks);
    return this.pages[k - this.firstPage]?.get(i - k * this.pageChunks) ?? null;
  }

  isZero(i: number): boolean {
    const k = Math.floor(i / this.pageChunks);
    return this.pages[k - this.firstPage]?.isZero(i - k * this.pageChunks) ?? true;
  }
}

/**
 * A backup's chunk ids by chunk index, a page of `pageChunks` at a time. Pages are loaded on
 * demand and the last CACHED_PAGES kept; lookups go through `page` or `window`. Errors name the
 * backup (`NOT_FOUND`/`CORRUPT`); a failed load is retried on the next call.
 */
export class ChunkMap {
  private readonly cache = new Map<number, Promise<ChunkList>>();
  /** The cached pages already loaded (a subset of `cache`), for `peek`. */
  private readonly loaded = new Map<number, ChunkList>();
  /** The page of zero chunks, shared by every null page of its length (a sparse 1 TiB volume has 2,000 of them). */
  private readonly zeroPages = new Map<number, ChunkList>();

  private constructor(
    /** Chunks in the backup. */
    readonly length: number,
    readonly pageChunks: number,
    private readonly backupId: string,
    /** Per page: its id, or null for zero chunks only (paged maps). */
    private readonly ids: readonly (string | null)[] | undefined,
    /** Every page, in memory (maps from inline lists). */
    private readonly resident: readonly ChunkList[] | undefined,
    private readonly load: ((id: string) => Promise<ChunkList>) | undefined,
  ) {}

  /** A map over pages stored in the repository (`ids`, one per page, null for zero pages). */
  static paged(backupId: string, length: number, pageChunks: number, ids: readonly (string | null)[], load: (id: string) => Promise<ChunkList>): ChunkMap {
    if (ids.length !== Math.ceil(length / pageChunks)) throw new RangeError(`${ids.length} pages cannot hold ${length} chunks of ${pageChunks} a page`);
    return new ChunkMap(length, pageChunks, backupId, ids, undefined, load);
  }

  /** A map over a list held whole in memory (a manifest of format 3 or older, or a test's), cut into pages. */
  static inMemory(backupId: string, list: ChunkList, pageChunks = PAGE_CHUNKS): ChunkMap {
    const pages: ChunkList[] = [];
    for (let first = 0; first < list.length; first += pageChunks) {
      const page = new ChunkList(Math.min(pageChunks, list.length - first));
      page.copyFrom(list, page.length, first);
      pages.push(page);
    }
    return new ChunkMap(list.length, pageChunks, backupId, undefined, pages, undefined);
  }

  get pageCount(): number {
    return Math.ceil(this.length / this.pageChunks);
  }

  /** Chunks in page `k`. */
  pageLength(k: number): number {
    return Math.max(0, Math.min(this.pageChunks, this.length - k * this.pageChunks));
  }

  /** Page `k`'s stored id, null for a page of zero chunks; undefined when the map is not stored as pages. */
  pageId(k: number): string | null | undefined {
    return this.ids?.[k];
  }

  /** The ids of the stored pages (null for zero pages); undefined when the map is not stored as pages. */
  get pageIds(): readonly (string | null)[] | undefined {
    return this.ids;
  }

  /** Page `k` (its chunk i is the backup's chunk k × pageChunks + i). Read-only: pages may be shared. */
  page(k: number): Promise<ChunkList> {
    if (!Number.isInteger(k) || k < 0 || k >= this.pageCount) return Promise.reject(new RangeError(`page ${k} is outside 0..${this.pageCount - 1}`));
    if (this.resident) return Promise.resolve(this.resident[k]!);
    if (this.ids![k] === null) {
      const length = this.pageLength(k);
      let zero = this.zeroPages.get(length);
      if (!zero) this.zeroPages.set(length, (zero = new ChunkList(length)));
      return Promise.resolve(zero);
    }
    const hit = this.cache.get(k);
    if (hit) {
      this.cache.delete(k); // most recently used last
      this.cache.set(k, hit);
      return hit;
    }
    const p = this.fetch(k);
    p.then(
      (list) => this.cache.get(k) === p && this.loaded.set(k, list),
      () => this.cache.get(k) === p && this.cache.delete(k),
    );
    this.cache.set(k, p);
    while (this.cache.size > CACHED_PAGES) {
      const oldest = this.cache.keys().next().value as number;
      this.cache.delete(oldest);
      this.loaded.delete(oldest);
    }
    return p;
  }

  /** Page `k` if it is in memory now (resident, zero, or loaded and cached), without waiting; else undefined. */
  peek(k: number): ChunkList | undefined {
    if (this.resident) return this.resident[k];
    if (this.ids![k] === null) return this.zeroPages.get(this.pageLength(k));
    return this.loaded.get(k);
  }

  /** Chunks [first, end) with their pages loaded. */
  async window(first: number, end: number): Promise<ChunkWindow> {
    const from = Math.max(0, first);
    const to = Math.min(end, this.length);
    if (to <= from) return new ChunkWindow([], 0, this.pageChunks);
    const firstPage = Math.floor(from / this.pageChunks);
    const lastPage = Math.floor((to - 1) / this.pageChunks);
    const pages = await Promise.all(Array.from({ length: lastPage - firstPage + 1 }, (_, n) => this.page(firstPage + n)));
    return new ChunkWindow(pages, firstPage, this.pageChunks);
  }

  /** The id of chunk `i`, or null for a zero chunk or an index outside the backup. */
  async get(i: number): Promise<string | null> {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) return null;
    const k = Math.floor(i / this.pageChunks);
    return (await this.page(k)).get(i - k * this.pageChunks);
  }

  /** Ids and nulls of chunks [start, end) as one array (its memory is the caller's choice). */
  async slice(start = 0, end = this.length): Promise<(string | null)[]> {
    const w = await this.window(start, end);
    const out: (string | null)[] = [];
    for (let i = Math.max(0, start); i < Math.min(end, this.length); i++) out.push(w.get(i));
    return out;
  }

  /** The id of every chunk that has one, in chunk order (an id used twice comes twice), a page at a time. */
  async *chunkIds(): AsyncGenerator<string> {
    for (let k = 0; k < this.pageCount; k++) yield* (await this.page(k)).ids();
  }

  private async fetch(k: number): Promise<ChunkList> {
    const id = this.ids![k]!;
    const length = this.pageLength(k);
    try {
      const list = await this.load!(id);
      if (list.length !== length) throw new CairnError('CORRUPT', `chunk list page ${id} holds ${list.length} chunks where page ${k} has ${length}`, { details: { page: id } });
      return list;
    } catch (err) {
      if (isCairnError(err) && (err.code === 'NOT_FOUND' || err.code === 'CORRUPT')) {
        throw new CairnError(err.code, `backup ${this.backupId}: ${err.message}`, { cause: err, details: { backupId: this.backupId, ...err.details } });
      }
      throw err;
    }
  }
}
