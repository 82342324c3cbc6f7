import type { ObjectStore } from '../contracts/object-store.js';
import { isCairnError } from '../errors.js';
import type { ChunkCodec } from './codec.js';
import { decodeDocument } from './codec.js';
import { Keys, type BlobTuple, type IndexDoc, type IndexEntry, type PackIndexDoc } from './format.js';

export interface Location extends IndexEntry {
  pack: string;
}

/** Label under which an index object (and a pack's own trailer index) is sealed. */
export const indexLabel = (id: string): string => `index:${id}`;

/** Index objects fetched at once by refresh. */
const LOAD_CONCURRENCY = 16;

/** The blob tuples of index entries. Pure. */
export const toTuples = (entries: readonly IndexEntry[]): BlobTuple[] => entries.map((e) => [e.id, e.offset, e.length, e.rawLength]);

/**
 * Where every chunk lives: the union of all index objects, loaded incrementally. An index object
 * names one pack (format 1: its id is the pack's) or several (format 2). A chunk stored twice
 * (two writers racing) resolves to the first pack seen; GC keeps one copy. A pack named by two
 * index objects (a GC rewrite interrupted) counts once.
 */
export class ChunkIndex {
  private readonly byId = new Map<string, Location>();
  private readonly byPack = new Map<string, Location[]>();
  /** Index objects known (loaded, or written by this process) and the packs each names. */
  private readonly objects = new Map<string, string[]>();
  /** Index objects that could not be read (verify reports them, GC refuses to run). */
  readonly damaged = new Set<string>();

  constructor(
    private readonly store: ObjectStore,
    private readonly codec: ChunkCodec,
  ) {}

  /**
   * Loads index objects written since the last refresh (by any process). Loads start while the
   * listing still runs, up to LOAD_CONCURRENCY at a time.
   */
  async refresh(): Promise<void> {
    const loading = new Set<Promise<void>>();
    for await (const o of this.store.list(Keys.indexes)) {
      const indexId = o.key.slice(Keys.indexes.length);
      if (this.objects.has(indexId) || this.damaged.has(indexId)) continue;
      const p = this.load(indexId).finally(() => loading.delete(p));
      loading.add(p);
      if (loading.size >= LOAD_CONCURRENCY) await Promise.race(loading);
    }
    await Promise.all(loading);
  }

  private async load(indexId: string): Promise<void> {
    try {
      const doc = decodeDocument<PackIndexDoc | IndexDoc>(this.codec, await this.store.get(Keys.index(indexId)), indexLabel(indexId));
      let packs: [string, BlobTuple[]][];
      if (doc.version === 1 && Array.isArray(doc.blobs)) packs = [[indexId, doc.blobs]];
      else if (doc.version === 2 && Array.isArray(doc.packs)) packs = doc.packs;
      else throw new Error(`unknown index version ${String((doc as { version?: unknown }).version)}`);
      if (this.objects.has(indexId)) return; // recorded meanwhile by this process
      this.recordObject(indexId, packs.map(([packId]) => packId));
      for (const [packId, blobs] of packs) {
        if (this.byPack.has(packId)) continue;
        this.add(packId, blobs.map(([id, offset, length, rawLength]) => ({ id, offset, length, rawLength, pack: packId })));
      }
    } catch (err) {
      if (isCairnError(err) && err.code === 'NOT_FOUND') return; // deleted while listing
      this.damaged.add(indexId);
    }
  }

  /** Records a pack's entries (a pack this process just wrote, or one just loaded). */
  add(packId: string, entries: IndexEntry[]): void {
    const ours = (e: IndexEntry): e is Location => (e as Location).pack === packId;
    const located = entries.every(ours) ? entries : entries.map((e) => (ours(e) ? e : { ...e, pack: packId }));
    this.byPack.set(packId, located);
    for (const e of located) if (!this.byId.has(e.id)) this.byId.set(e.id, e);
  }

  /** Records that index object `indexId` names `packIds` (one this process wrote, or loaded). */
  recordObject(indexId: string, packIds: string[]): void {
    this.objects.set(indexId, packIds);
  }

  /** Forgets an index object (after GC deleted it); its packs stay known until removed. */
  forgetObject(indexId: string): void {
    this.objects.delete(indexId);
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
    const entries = this.byPack.get(packId) ?? [];
    this.byPack.delete(packId);
    for (const e of entries) {
      if (this.byId.get(e.id)?.pack !== packId) continue;
      this.byId.delete(e.id);
      for (const [, list] of this.byPack) {
        const again = list.find((x) => x.id === e.id);
        if (again) {
          this.byId.set(e.id, again);
          break;
        }
      }
    }
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  get(id: string): Location | undefined {
    return this.byId.get(id);
  }

  packs(): ReadonlyMap<string, IndexEntry[]> {
    return this.byPack;
  }

  get chunkCount(): number {
    return this.byId.size;
  }
}
