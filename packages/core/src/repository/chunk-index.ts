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

/**
 * Where every chunk lives: the union of all pack indexes, loaded incrementally. A chunk stored
 * twice (two writers racing) resolves to the first pack seen; GC keeps one copy.
 */
export class ChunkIndex {
  private readonly byId = new Map<string, Location>();
  private readonly byPack = new Map<string, IndexEntry[]>();
  /** Index objects that could not be read (verify reports them, GC leaves their packs alone). */
  readonly damaged = new Set<string>();

  constructor(
    private readonly store: ObjectStore,
    private readonly codec: ChunkCodec,
  ) {}

  /** Loads index objects written since the last refresh (by any process). */
  async refresh(): Promise<void> {
    const fresh: string[] = [];
    for await (const o of this.store.list(Keys.indexes)) {
      const packId = o.key.slice(Keys.indexes.length);
      if (!this.byPack.has(packId) && !this.damaged.has(packId)) fresh.push(packId);
    }
    for (let i = 0; i < fresh.length; i += 16) {
      await Promise.all(fresh.slice(i, i + 16).map((p) => this.load(p)));
    }
  }

  private async load(packId: string): Promise<void> {
    try {
      const doc = decodeDocument<PackIndexDoc>(this.codec, await this.store.get(Keys.index(packId)), indexLabel(packId));
      this.add(packId, doc.blobs.map(([id, offset, length, rawLength]) => ({ id, offset, length, rawLength })));
    } catch (err) {
      if (isCairnError(err) && err.code === 'NOT_FOUND') return; // deleted while listing
      this.damaged.add(packId);
    }
  }

  /** Records a pack this process just wrote. */
  add(packId: string, entries: IndexEntry[]): void {
    this.byPack.set(packId, entries);
    for (const e of entries) if (!this.byId.has(e.id)) this.byId.set(e.id, { ...e, pack: packId });
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
