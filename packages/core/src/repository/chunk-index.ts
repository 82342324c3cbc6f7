import type { CallOptions, ObjectStore } from '../contracts/object-store.js';
import { isCairnError, throwIfAborted } from '../errors.js';
import { eachUntilAborted, untilAborted } from '../util/until-aborted.js';
import type { ChunkCodec } from './codec.js';
import { openDocument } from './codec.js';
import { scanIndexDocument } from './index-scan.js';
import { HEX_ID, ID_BYTES, decodeId, encodeId } from './chunk-id.js';
import { IdTable } from './id-table.js';
import { Keys, type BlobTuple, type IndexDoc, type IndexEntry, type PackIndexDoc } from './format.js';

export interface Location extends IndexEntry {
  pack: string;
}

/** Label under which an index object (and a pack's own trailer index) is sealed. */
export const indexLabel = (id: string): string => `index:${id}`;

/**
 * Index objects loaded at once by refresh. Each load holds its object sealed, opened and as JSON
 * (about 3 MiB for 64 packs) until it is scanned, and opening and scanning run on this thread:
 * two overlap one object's read with another's decoding, and keep that transient memory the same
 * however many objects the repository has (16 at once made the index load add 13–20 MiB of peak
 * RSS at 8 GiB, against a few at 2 GiB).
 */
const LOAD_CONCURRENCY = 2;

/** The blob tuples of index entries. Pure. */
export const toTuples = (entries: readonly IndexEntry[]): BlobTuple[] => entries.map((e) => [e.id, e.offset, e.length, e.rawLength]);

/** Per entry in `fields`: pack ordinal, offset, stored length, plaintext length. */
const FIELDS = 4;
const U32_MAX = 0xffffffff;

/**
 * Where every chunk lives: the union of all index objects, loaded incrementally. An index object
 * names one pack (format 1: its id is the pack's) or several (format 2). A chunk stored twice
 * (two writers racing) resolves to the first pack seen (`get`); its other copies stay known
 * (`otherCopies`), for readers whose first copy is damaged or gone; GC keeps one copy. A pack
 * named by two index objects (a GC rewrite interrupted) counts once.
 *
 * Memory: entries live in typed arrays (32 binary id bytes and four u32 per blob, plus an
 * open-addressing table of i32 slots), about 60 bytes a chunk rather than ~200 as JS objects and
 * hex strings, so the index of a large repository stays small. Objects are made only on the way
 * out (`get`, `packs`).
 */
export class ChunkIndex {
  /** Entry k: id bytes at [k*32, k*32+32), fields at [k*4, k*4+4). Dead packs' entries linger until a rebuild. */
  private ids = new Uint8Array(ID_BYTES * 256);
  private fields = new Uint32Array(FIELDS * 256);
  private entries = 0;
  /** From an id to its first live entry. */
  private readonly table = new IdTable();
  /** Pack ordinals (as stored in `fields`) to pack ids; ordinals are never reused. */
  private readonly packIds: string[] = [];
  /** Live packs in the order they became known, each with its entries' place. */
  private readonly byPack = new Map<string, { ordinal: number; first: number; count: number }>();
  /** A pack was removed: the table is rebuilt (and dead entries dropped) before the next lookup. */
  private stale = false;
  /** A looked-up id decoded, so probing compares bytes without allocating. */
  private readonly key = new Uint8Array(ID_BYTES);
  /** Index objects known (loaded, or written by this process) and the packs each names. */
  private readonly objects = new Map<string, string[]>();
  /** Index objects that could not be read (verify reports them, GC refuses to run). */
  readonly damaged = new Set<string>();
  /** forgetObject ran since the last refresh: some pack may be named by no known object now. */
  private forgotSince = false;
  /** Entries whose id an earlier entry has (copies but the first); recounted when the table is rebuilt. */
  private duplicates = 0;
  /** Per id stored more than once, its copies but the first: made by otherCopies, dropped when entries change. */
  private copies: Map<string, Location[]> | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly codec: ChunkCodec,
  ) {}

  /**
   * Brings the index up to the store: loads index objects written since the last refresh (by any
   * process), and forgets those deleted since (a GC elsewhere, or forgetObject) with every pack no
   * remaining object names, so that a long-running process never offers a chunk whose pack is
   * gone or unnamed. Loads start while the listing still runs, up to LOAD_CONCURRENCY at a time.
   * Call it under the repository lock a job holds (shared or exclusive): GC, which deletes, then
   * cannot run.
   *
   * `options.signal` (a job's): once it aborts, the refresh rejects `CANCELLED` at once, whatever
   * the store does: the listing and the reads get the signal (a `cancellable` store stops them)
   * and are no longer waited for. A cancelled refresh leaves a view the next refresh completes:
   * the index objects it loaded before the abort are applied whole, each on its own; nothing is
   * applied after the abort (a read that returns late is dropped), and nothing is forgotten (that
   * needs a whole listing). Without a signal, it runs to its end or fails. GC passes its own:
   * it needs the store seen whole only to go on, and a GC whose refresh was cancelled stops.
   */
  async refresh(options: CallOptions = {}): Promise<void> {
    const { signal } = options;
    throwIfAborted(signal);
    // Only objects known before the listing starts can be judged deleted: one this process
    // records meanwhile may be missing from the listing without being gone.
    const known = new Set([...this.objects.keys(), ...this.damaged]);
    const listed = new Set<string>();
    const loading = new Set<Promise<void>>();
    // Every load's failure is kept (never left unhandled, whatever stops the listing) and the
    // first is raised once all have settled (or at once, cancelled).
    let failure: { error: unknown } | undefined;
    try {
      for await (const o of eachUntilAborted(this.store.list(Keys.indexes, { signal }), signal)) {
        const indexId = o.key.slice(Keys.indexes.length);
        listed.add(indexId);
        if (failure || this.objects.has(indexId) || this.damaged.has(indexId)) continue;
        const p: Promise<void> = this.load(indexId, signal)
          .catch((error: unknown) => void (failure ??= { error }))
          .finally(() => loading.delete(p));
        loading.add(p);
        if (loading.size >= LOAD_CONCURRENCY) await untilAborted(Promise.race(loading), signal);
      }
    } finally {
      await untilAborted(Promise.all(loading), signal);
    }
    if (failure) throw failure.error;
    throwIfAborted(signal);
    let forgotten = this.forgotSince;
    this.forgotSince = false;
    for (const indexId of known) {
      if (listed.has(indexId)) continue;
      forgotten = this.objects.delete(indexId) || forgotten;
      this.damaged.delete(indexId);
    }
    if (!forgotten) return;
    const named = this.indexedPacks();
    for (const packId of [...this.byPack.keys()]) if (!named.has(packId)) this.remove(packId);
  }

  /**
   * Loads index object `indexId` and applies it whole (synchronously once read), unless `signal`
   * aborted first: then `CANCELLED`, nothing applied, not even as damaged.
   */
  private async load(indexId: string, signal: AbortSignal | undefined): Promise<void> {
    try {
      const sealed = await untilAborted(this.store.get(Keys.index(indexId), undefined, { signal }), signal);
      throwIfAborted(signal);
      const json = openDocument(this.codec, sealed, indexLabel(indexId));
      const scanned = scanIndexDocument(json, indexId);
      if (scanned) {
        if (this.objects.has(indexId)) return; // recorded meanwhile by this process
        this.recordObject(indexId, scanned.packs.map((p) => p.packId));
        let first = 0;
        for (const { packId, count } of scanned.packs) {
          if (!this.byPack.has(packId)) this.addBinary(packId, scanned.ids.subarray(first * ID_BYTES, (first + count) * ID_BYTES), scanned.fields.subarray(first * 3, (first + count) * 3));
          first += count;
        }
        return;
      }
      // Not in the form Cairn writes (hand-made, reformatted): parsed and checked as JSON.
      const doc = JSON.parse(json.toString('utf8')) as PackIndexDoc | IndexDoc;
      let packs: [string, BlobTuple[]][];
      if (doc.version === 1 && Array.isArray(doc.blobs)) packs = [[indexId, doc.blobs]];
      else if (doc.version === 2 && Array.isArray(doc.packs)) packs = doc.packs;
      else throw new Error(`unknown index version ${String((doc as { version?: unknown }).version)}`);
      for (const [packId, blobs] of packs) if (typeof packId !== 'string' || !HEX_ID.test(packId) || !Array.isArray(blobs) || !blobs.every(validTuple)) throw new Error('malformed pack entry');
      if (this.objects.has(indexId)) return; // recorded meanwhile by this process
      this.recordObject(indexId, packs.map(([packId]) => packId));
      for (const [packId, blobs] of packs) {
        if (this.byPack.has(packId)) continue;
        this.addTuples(packId, blobs);
      }
    } catch (err) {
      throwIfAborted(signal);
      if (isCairnError(err) && err.code === 'NOT_FOUND') return; // deleted while listing
      // A failure to read it (the store unavailable) fails the refresh and is tried again by the
      // next one; only content that does not decode or parse is damage, remembered as such.
      if (isCairnError(err) && err.code !== 'CORRUPT') throw err;
      this.damaged.add(indexId);
    }
  }

  /**
   * Records a pack's entries (a pack an index object this process just stored names, or one just
   * loaded); a pack known already is replaced. A pack no recorded object names is forgotten by
   * the next refresh that sees an object deleted. Throws (plain Error) for an id that is not 64 hex digits or a field
   * that is not a u32, adding nothing.
   */
  add(packId: string, entries: readonly IndexEntry[]): void {
    const tuples = entries.map((e): BlobTuple => [e.id, e.offset, e.length, e.rawLength]);
    if (!tuples.every(validTuple)) throw new Error(`pack ${packId} has a malformed entry`);
    this.addTuples(packId, tuples);
  }

  /** Tuples already checked (validTuple). */
  private addTuples(packId: string, blobs: readonly BlobTuple[]): void {
    const ids = new Uint8Array(blobs.length * ID_BYTES);
    const fields = new Uint32Array(blobs.length * 3);
    blobs.forEach(([id, offset, length, rawLength], j) => {
      decodeId(id, ids, j * ID_BYTES);
      fields.set([offset, length, rawLength], j * 3);
    });
    this.addBinary(packId, ids, fields);
  }

  /** A pack's blobs as 32 id bytes and [offset, length, rawLength] each; a pack known already is replaced. */
  private addBinary(packId: string, ids: Uint8Array, fields: Uint32Array): void {
    if (this.byPack.has(packId)) this.remove(packId);
    this.refreshTable();
    const count = ids.length / ID_BYTES;
    this.reserve(this.entries + count);
    const ordinal = this.packIds.push(packId) - 1;
    const first = this.entries;
    this.ids.set(ids, first * ID_BYTES);
    for (let j = 0; j < count; j++) {
      const k = this.entries++;
      const f = k * FIELDS;
      [this.fields[f], this.fields[f + 1], this.fields[f + 2], this.fields[f + 3]] = [ordinal, fields[j * 3]!, fields[j * 3 + 1]!, fields[j * 3 + 2]!];
      if (this.table.insert(this.ids, k) !== k) this.duplicates++;
    }
    this.byPack.set(packId, { ordinal, first, count });
    this.copies = undefined;
  }

  /** Records that index object `indexId` names `packIds` (one this process wrote, or loaded). */
  recordObject(indexId: string, packIds: string[]): void {
    this.objects.set(indexId, packIds);
  }

  /**
   * Forgets an index object (after GC deleted it). Its packs stay known until removed, or until
   * the next refresh, which forgets every pack no remaining object names: a GC that failed
   * between deleting an index object and deleting its packs leaves such packs in the store as
   * orphans, which this process must neither reuse nor count as holding a chunk.
   */
  forgetObject(indexId: string): void {
    this.forgotSince = this.objects.delete(indexId) || this.forgotSince;
  }

  /** The index objects that name any of `packIds`, with every pack each names. */
  objectsNaming(packIds: ReadonlySet<string>): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const [indexId, packs] of this.objects) if (packs.some((p) => packIds.has(p))) out.set(indexId, packs);
    return out;
  }

  /** Every pack some known index object names. */
  indexedPacks(): Set<string> {
    const out = new Set<string>();
    for (const packs of this.objects.values()) for (const p of packs) out.add(p);
    return out;
  }

  /** Forgets a pack (after GC deleted it); chunks found in another pack stay reachable. */
  remove(packId: string): void {
    if (this.byPack.delete(packId)) [this.stale, this.copies] = [true, undefined];
  }

  has(id: string): boolean {
    return this.find(id) >= 0;
  }

  /** Whether the index holds the chunk whose id is the ID_BYTES bytes of `bytes` at `at` (binary, as ChunkList keeps ids: no string made). */
  hasBinary(bytes: Uint8Array, at = 0): boolean {
    this.refreshTable();
    return this.table.find(this.ids, bytes, at) >= 0;
  }

  get(id: string): Location | undefined {
    const k = this.find(id);
    return k < 0 ? undefined : this.entryAt(k, id);
  }

  /**
   * Every live copy of `id` but the one `get` resolves to, in the order their packs became known
   * (a chunk stored in several packs: docs/repository-format.md, "Packs and indexes"): where a
   * reader whose copy is damaged or gone looks next. Empty at no cost when no chunk is stored
   * twice; else the first call after the index changed walks every entry once (a table lookup
   * each) and keeps only the extra copies. Never on a reader's path while its copies read well.
   */
  otherCopies(id: string): Location[] {
    this.refreshTable();
    if (this.duplicates === 0) return [];
    if (!this.copies) {
      const copies = new Map<string, Location[]>();
      for (let k = 0; k < this.entries; k++) {
        if (this.table.find(this.ids, this.ids, k * ID_BYTES) === k) continue;
        const copy = this.entryAt(k);
        const list = copies.get(copy.id);
        if (list) list.push(copy);
        else copies.set(copy.id, [copy]);
      }
      this.copies = copies;
    }
    return this.copies.get(id) ?? [];
  }

  /** Every live pack with its entries; a view: entries are made when a pack is asked for. */
  packs(): ReadonlyMap<string, IndexEntry[]> {
    return new PackView(this.byPack, (first, count) => Array.from({ length: count }, (_, j) => this.entryAt(first + j)));
  }

  get chunkCount(): number {
    this.refreshTable();
    return this.table.size;
  }

  private entryAt(k: number, id?: string): Location {
    const f = k * FIELDS;
    return {
      id: id ?? encodeId(this.ids, k * ID_BYTES),
      offset: this.fields[f + 1]!,
      length: this.fields[f + 2]!,
      rawLength: this.fields[f + 3]!,
      pack: this.packIds[this.fields[f]!]!,
    };
  }

  /** The first live entry with `id`, or -1 (also for anything that is not a 64-hex-digit id). */
  private find(id: string): number {
    if (!decodeId(id, this.key, 0)) return -1;
    this.refreshTable();
    return this.table.find(this.ids, this.key);
  }

  /** Room for `n` entries (grown by half again, so appends cost O(1) amortized). */
  private reserve(n: number): void {
    if (n * FIELDS <= this.fields.length) return;
    const cap = Math.max(n, Math.ceil((this.fields.length / FIELDS) * 1.5));
    const ids = new Uint8Array(cap * ID_BYTES);
    ids.set(this.ids.subarray(0, this.entries * ID_BYTES));
    const fields = new Uint32Array(cap * FIELDS);
    fields.set(this.fields.subarray(0, this.entries * FIELDS));
    [this.ids, this.fields] = [ids, fields];
  }

  /** After removals: keeps only live packs' entries (in the order the packs became known) and rebuilds the table. */
  private refreshTable(): void {
    if (!this.stale) return;
    this.stale = false;
    let live = 0;
    for (const p of this.byPack.values()) live += p.count;
    const ids = new Uint8Array(Math.max(256, live) * ID_BYTES);
    const fields = new Uint32Array(Math.max(256, live) * FIELDS);
    let at = 0;
    for (const p of this.byPack.values()) {
      ids.set(this.ids.subarray(p.first * ID_BYTES, (p.first + p.count) * ID_BYTES), at * ID_BYTES);
      fields.set(this.fields.subarray(p.first * FIELDS, (p.first + p.count) * FIELDS), at * FIELDS);
      p.first = at;
      at += p.count;
    }
    [this.ids, this.fields, this.entries, this.duplicates] = [ids, fields, at, 0];
    this.table.reset(at);
    for (let k = 0; k < at; k++) if (this.table.insert(this.ids, k) !== k) this.duplicates++;
  }
}

/** A blob tuple an index may hold: a 64-lowercase-hex-digit id and u32 fields (docs/repository-format.md). */
export function validTuple(t: unknown): t is BlobTuple {
  if (!Array.isArray(t) || t.length !== 4 || typeof t[0] !== 'string' || !HEX_ID.test(t[0])) return false;
  for (let i = 1; i < 4; i++) if (!Number.isInteger(t[i]) || t[i] < 0 || t[i] > U32_MAX) return false;
  return true;
}

/** ChunkIndex.packs(): a read-only map over the live packs that makes each pack's entries when asked. */
class PackView implements ReadonlyMap<string, IndexEntry[]> {
  constructor(
    private readonly byPack: ReadonlyMap<string, { first: number; count: number }>,
    private readonly entriesOf: (first: number, count: number) => IndexEntry[],
  ) {}

  get size(): number {
    return this.byPack.size;
  }

  has(packId: string): boolean {
    return this.byPack.has(packId);
  }

  get(packId: string): IndexEntry[] | undefined {
    const p = this.byPack.get(packId);
    return p && this.entriesOf(p.first, p.count);
  }

  keys(): MapIterator<string> {
    return this.byPack.keys();
  }

  *entries(): MapIterator<[string, IndexEntry[]]> {
    for (const [packId, p] of this.byPack) yield [packId, this.entriesOf(p.first, p.count)];
  }

  *values(): MapIterator<IndexEntry[]> {
    for (const [, entries] of this.entries()) yield entries;
  }

  forEach(fn: (value: IndexEntry[], key: string, map: ReadonlyMap<string, IndexEntry[]>) => void): void {
    for (const [k, v] of this.entries()) fn(v, k, this);
  }

  [Symbol.iterator](): MapIterator<[string, IndexEntry[]]> {
    return this.entries();
  }
}
