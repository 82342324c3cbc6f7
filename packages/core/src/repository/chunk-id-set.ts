import { ID_BYTES, decodeId, encodeId, hashAt } from './chunk-id.js';

/**
 * A set of chunk ids in insertion order, held as 32 binary bytes each in one array with an
 * open-addressing table of i32 slots: 40–56 bytes an id (a Set of hex strings takes ~105, and
 * verify's former maps ~245), so a walk over every chunk of a large repository stays small.
 */
export class ChunkIdSet {
  /** Id k at [k*32, k*32+32). */
  private bytes = new Uint8Array(ID_BYTES * 1024);
  /** Linear probing from an id's first four bytes to its ordinal; -1 is empty. At most half full. */
  private slots = new Int32Array(2048).fill(-1);
  private count = 0;
  /** A looked-up id decoded, so probing compares bytes without allocating. */
  private readonly key = new Uint8Array(ID_BYTES);

  get size(): number {
    return this.count;
  }

  /** Adds `id` (64 lowercase hex digits); true when it was not there yet. Throws (plain Error) for anything else. */
  add(id: string): boolean {
    if (!decodeId(id, this.key, 0)) throw new Error(`not a chunk id: ${id.slice(0, 80)}`);
    const s = this.probe();
    if (this.slots[s]! >= 0) return false;
    if ((this.count + 1) * ID_BYTES > this.bytes.length) {
      const grown = new Uint8Array(Math.ceil(this.bytes.length * 1.5 / ID_BYTES) * ID_BYTES);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    this.bytes.set(this.key, this.count * ID_BYTES);
    this.slots[s] = this.count++;
    if (this.count * 2 > this.slots.length) this.rehash();
    return true;
  }

  has(id: string): boolean {
    return decodeId(id, this.key, 0) && this.slots[this.probe()]! >= 0;
  }

  /** The ids added from the `start`th up to (not including) the `end`th, as hex, in insertion order. */
  slice(start: number, end: number): string[] {
    const out: string[] = [];
    for (let k = Math.max(0, start); k < Math.min(end, this.count); k++) out.push(encodeId(this.bytes, k * ID_BYTES));
    return out;
  }

  /** The slot holding `key`, or the empty slot where it would go. */
  private probe(): number {
    const mask = this.slots.length - 1;
    for (let s = hashAt(this.key, 0) & mask; ; s = (s + 1) & mask) {
      const k = this.slots[s]!;
      if (k < 0 || this.sameAs(k)) return s;
    }
  }

  private sameAs(k: number): boolean {
    const at = k * ID_BYTES;
    for (let i = 0; i < ID_BYTES; i++) if (this.bytes[at + i] !== this.key[i]) return false;
    return true;
  }

  private rehash(): void {
    this.slots = new Int32Array(this.slots.length * 2).fill(-1);
    const mask = this.slots.length - 1;
    for (let k = 0; k < this.count; k++) {
      let s = hashAt(this.bytes, k * ID_BYTES) & mask;
      while (this.slots[s]! >= 0) s = (s + 1) & mask;
      this.slots[s] = k;
    }
  }
}
