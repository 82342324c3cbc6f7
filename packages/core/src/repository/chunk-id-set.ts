import { ID_BYTES, decodeId, encodeId } from './chunk-id.js';
import { IdTable } from './id-table.js';

/**
 * A set of chunk ids in insertion order, held as 32 binary bytes each in one array with an
 * open-addressing table of i32 slots: 40–56 bytes an id (a Set of hex strings takes ~105, and
 * verify's former maps ~245), so a walk over every chunk of a large repository stays small.
 */
export class ChunkIdSet {
  /** Id k at [k*32, k*32+32). */
  private bytes = new Uint8Array(ID_BYTES * 1024);
  private readonly table = new IdTable(1024);
  /** A looked-up id decoded, so probing compares bytes without allocating. */
  private readonly key = new Uint8Array(ID_BYTES);

  get size(): number {
    return this.table.size;
  }

  /** Adds `id` (64 lowercase hex digits); true when it was not there yet. Throws (plain Error) for anything else. */
  add(id: string): boolean {
    const k = this.table.size;
    if ((k + 1) * ID_BYTES > this.bytes.length) {
      const grown = new Uint8Array(Math.ceil(this.bytes.length * 1.5 / ID_BYTES) * ID_BYTES);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    // Decoded straight into the next ordinal's place: kept only if the table takes it.
    if (!decodeId(id, this.bytes, k * ID_BYTES)) throw new Error(`not a chunk id: ${id.slice(0, 80)}`);
    return this.table.insert(this.bytes, k) === k;
  }

  has(id: string): boolean {
    return decodeId(id, this.key, 0) && this.table.find(this.bytes, this.key) >= 0;
  }

  /** The ids added from the `start`th up to (not including) the `end`th, as hex, in insertion order. */
  slice(start: number, end: number): string[] {
    const out: string[] = [];
    for (let k = Math.max(0, start); k < Math.min(end, this.size); k++) out.push(encodeId(this.bytes, k * ID_BYTES));
    return out;
  }
}
