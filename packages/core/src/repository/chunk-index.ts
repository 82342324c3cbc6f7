import type { ObjectStore } from '../contracts/object-store.js';
import { isCairnError } from '../errors.js';
import type { ChunkCodec } from './codec.js';
import { decodeDocument } from './codec.js';
import { Keys, type IndexEntry, type PackIndexDoc } from './format.js';

export interface Location extends IndexEntry {
  pack: string;
}

/** Label under which a pack's index document is sealed. */
export const indexLabel = (packId: string): string => `index:${packId}`;

/** Index objects fetched at once by refresh. */
const LOAD_CONCURRENCY = 16;

/**
 * Where every chunk lives: the union of all pack indexes, loaded incrementally. A chunk stored
 * twice (two writers racing) resolves to the first pack seen; GC keeps one copy.
 */
export class ChunkIndex {
  private readonly byId = new Map<string, Location>();
  private readonly byPack = new Map<string, Location[]>();
  /** Index objects that could not be read (verify reports them, GC leaves their packs alone). */
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
      const packId = o.key.slice(Keys.indexes.length);
      if (this.byPack.has(packId) || this.damaged.has(packId)) continue;
      const p = this.load(packId).finally(() => loading.delete(p));
      loading.add(p);
      if (loading.size >= LOAD_CONCURRENCY) await Promise.race(loading);
    }
    await Promise.all(loading);
  }

  private async load(packId: string): Promise<void> {
    try {
      const doc = decodeDocument<PackIndexDoc>(this.codec, await this.store.get(Keys.index(packId)), indexLabel(packId));
      if (this.byPack.has(packId)) return; // loaded meanwhile by add()
      this.add(packId, doc.blobs.map(([id, offset, length, rawLength]) => ({ id, offset, length, rawLength, pack: packId })));
    } catch (err) {
      if (isCairnError(err) && err.code === 'NOT_FOUND') return; // deleted while listing
      this.damaged.add(packId);
    }
  }

  /** Records a pack's entries (a pack this process just wrote, or one just loaded). */
  add(packId: string, entries: IndexEntry[]): void {
    const located = entries.map((e) => ('pack' in e && (e as Location).pack === packId ? (e as Location) : { ...e, pack: packId }));
    this.byPack.set(packId, located);
    for (const e of located) if (!this.byId.has(e.id)) this.byId.set(e.id, e);
  }

  /** Forgets a pack (after GC deleted it); chunks found in another pack stay reachable. */
  remove(packId: string): void {
    const entries = this.byPack.get(packId) ?? [];
    this.byPack.delete(packId);
    for (const e of entries) {
      if (this.byId.get(e.id)?.pack !== packId) continue;
      this.byId.delete(e.id);
      for (const [other, list] of this.byPack) {
        const again = list.find((x) => x.id === e.id);
        if (again) {
          this.byId.set(e.id, { ...again, pack: other });
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
