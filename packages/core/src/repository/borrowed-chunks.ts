import type { ChunkIndex } from './chunk-index.js';
import type { InflightChunks } from './inflight-chunks.js';
import type { PackWriter } from './pack-writer.js';

/** Chunks noted before those named meanwhile are dropped (then twice as many as remain). */
const PRUNE_MIN = 65_536;

/**
 * The chunks one backup reuses from other backups of its process that are storing them (see
 * InflightChunks), each with a chunk index where the backup's volume holds it, until the chunk is
 * named. Memory: ~110 bytes a chunk for those not named yet (at most twice what the other backups
 * hold unnamed, or PRUNE_MIN): chunks the index names are dropped as the map grows.
 */
export class BorrowedChunks {
  private readonly chunks = new Map<string, number>();
  private pruneAt = PRUNE_MIN;

  constructor(private readonly index: ChunkIndex) {}

  /** Notes that the backup reuses chunk `id`, which its volume holds at chunk index `at`, from another backup. */
  note(id: string, at: number): void {
    if (this.chunks.has(id)) return;
    this.chunks.set(id, at);
    if (this.chunks.size < this.pruneAt) return;
    for (const named of this.chunks.keys()) if (this.index.has(named)) this.chunks.delete(named);
    this.pruneAt = Math.max(PRUNE_MIN, this.chunks.size * 2);
  }

  /**
   * Sees to it that every chunk noted is named once `writer` finishes, so that the backup's
   * manifest never depends on another backup (which may yet fail): a chunk named meanwhile, or
   * that `owner` (this backup) stores itself, needs nothing; one in a pack another backup has
   * stored gets that pack named by `writer` too; any other (still in a pack being filled or
   * uploaded, or lost with a backup that failed) is given to `storeAgain` with its chunk index,
   * to be read from the volume again and stored. Call once every chunk of the backup is packed,
   * before `writer` finishes. Rejects with `storeAgain`'s failure.
   */
  async secure(inflight: InflightChunks, owner: object, writer: PackWriter, storeAgain: (id: string, at: number) => Promise<void>): Promise<void> {
    for (const [id, at] of this.chunks) {
      if (this.index.has(id) || inflight.ownerOf(id) === owner) continue;
      const pack = inflight.storedPack(id);
      if (pack) writer.name(pack.packId, pack.entries);
      else await storeAgain(id, at);
    }
    this.chunks.clear();
  }
}
