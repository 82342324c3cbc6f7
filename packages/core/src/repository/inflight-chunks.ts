import type { IndexEntry } from './format.js';

/** A pack a writer has stored (the store holds it whole) that an index object may not name yet. */
export interface StoredPack {
  readonly owner: object;
  readonly packId: string;
  readonly entries: readonly IndexEntry[];
}

/**
 * The chunks the backups of one process are storing that no stored index object names yet: per
 * chunk, the backup storing it (its `owner`, any object the backup keeps) and, once the pack it
 * went into is stored, that pack. Another backup of the process that meets such a chunk may reuse
 * it instead of storing it again, and must then see to it that the chunk is named before its
 * manifest is written (backup-writer). Another process's chunks are reusable once its index
 * objects name them. Memory: a map entry per chunk (~26 bytes; the id strings are the writers').
 */
export class InflightChunks {
  /** The owner of each chunk not yet named, or its stored pack (which names the owner). */
  private readonly chunks = new Map<string, object>();

  /** Records that `owner` is storing chunk `id` (which no other owner is storing). */
  claim(id: string, owner: object): void {
    this.chunks.set(id, owner);
  }

  /** The backup storing chunk `id`, if any backup of this process is and no index object names it yet. */
  ownerOf(id: string): object | undefined {
    const held = this.chunks.get(id);
    return held instanceof Stored ? held.owner : held;
  }

  /** The stored pack holding chunk `id`, once its owner has stored it and while no index object names it. */
  storedPack(id: string): StoredPack | undefined {
    const held = this.chunks.get(id);
    return held instanceof Stored ? held : undefined;
  }

  /** `owner` has stored pack `packId` holding `entries`: its chunks are found there from now on. */
  stored(owner: object, packId: string, entries: readonly IndexEntry[]): void {
    const pack = new Stored(owner, packId, entries);
    for (const e of entries) if (this.ownerOf(e.id) === owner) this.chunks.set(e.id, pack);
  }

  /** Forgets the chunks of `entries` that `owner` holds (an index object names them now). */
  release(owner: object, entries: readonly { id: string }[]): void {
    for (const { id } of entries) if (this.ownerOf(id) === owner) this.chunks.delete(id);
  }

  /** Forgets every chunk `owner` holds (its backup is over: named, or never to be). */
  releaseAll(owner: object): void {
    for (const id of this.chunks.keys()) if (this.ownerOf(id) === owner) this.chunks.delete(id);
  }
}

class Stored implements StoredPack {
  constructor(
    readonly owner: object,
    readonly packId: string,
    readonly entries: readonly IndexEntry[],
  ) {}
}
